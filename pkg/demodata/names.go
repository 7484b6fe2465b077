package demodata

import (
	"math/rand/v2"
	"strings"
)

// Invented people: common English given names and surnames, combined at random.
var givenNames = strings.Fields(`Oliver George Noah Arthur Muhammad Leo Harry Oscar Archie Henry
	Theodore Freddie Jack Charlie Theo Alfie Jacob Thomas Finley Arlo William Lucas Roman Tommy Isaac
	Teddy Alexander Luca Edward James Joshua Albie Elijah Max Mohammed Reuben Mason Sebastian Rory Jude
	Olivia Amelia Isla Ava Ivy Freya Lily Florence Mia Willow Rosie Sophia Isabella Grace Daisy Sienna
	Poppy Elsie Emily Ella Evelyn Phoebe Sofia Evie Charlotte Harper Millie Matilda Maya Sophie Alice
	Emilia Isabelle Ruby Luna Maisie Aria Penelope Mila Bonnie Eva Hallie Aisha Zara Priya Anaya Brenton`)

var familyNames = strings.Fields(`Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Robinson
	Wright Thompson Evans Walker White Roberts Green Hall Thomas Clarke Jackson Wood Harris Edwards Turner
	Martin Cooper Hill Ward Hughes Moore Clark King Harrison Lewis Baker Lee Allen Morris Khan Scott
	Watson Davis Parker James Bennett Young Phillips Richardson Mitchell Bailey Carter Cook Singh Shaw
	Bell Collins Morgan Kelly Begum Miller Cox Hussain Marshall Simpson Price Anderson Adams Wilkinson
	Ali Ahmed Foster Ellis Murphy Chapman Mason Gray Richards Webb Griffiths Hunt Palmer Campbell Holmes
	Mills Rogers Barnes Knight Matthews Barker Powell Stevens Kaur Fisher Butler Dixon Russell Harvey
	Pearson Graham Waters Okafor Nowak Kowalski Osei Mensah`)

// Postcode areas of England (real area letters, so postcodes look right; districts and
// units are invented).
var postcodeAreas = strings.Fields(`AL B BA BB BD BH BL BN BR BS CA CB CH CM CO CR CT CV CW DA DE DH DL
	DN DT DY E EC EN EX GL GU HA HD HG HP HR HU HX IG IP KT L LA LE LN LS LU M ME MK N NE NG NN NR NW OL
	OX PE PL PO PR RG RH RM S SE SG SK SL SM SN SO SP SR SS ST SW TA TF TN TQ TR TS TW UB W WA WC WD WF
	WN WR WS WV YO`)

// Letters used in the inward code's unit: never C I K M O V.
const unitLetters = "ABDEFGHJLNPQRSTUWXYZ"

// postcode returns a UK-shaped postcode such as "LS12 4AB".
func postcode(r *rand.Rand) string {
	var b strings.Builder
	b.Grow(8)
	b.WriteString(postcodeAreas[r.IntN(len(postcodeAreas))])
	district := 1 + r.IntN(29)
	if district >= 10 {
		b.WriteByte(byte('0' + district/10))
	}
	b.WriteByte(byte('0' + district%10))
	b.WriteByte(' ')
	b.WriteByte(byte('0' + r.IntN(10)))
	b.WriteByte(unitLetters[r.IntN(len(unitLetters))])
	b.WriteByte(unitLetters[r.IntN(len(unitLetters))])
	return b.String()
}

// schoolNames give schools plausible names: "<place> <kind>".
var (
	schoolPlaces = strings.Fields(`Ashfield Beechwood Brookside Castleton Cedar Churchill Elmhurst
		Fairfield Greenacre Hawthorn Highfield Hillside Kingsmead Lakeside Meadowbank Millbrook Northgate
		Oakwood Parkside Queensbury Ravenscroft Riverside Rosehill Southfield Springfield Stonebridge
		Thornbury Westfield Willowbrook Woodlands`)
	schoolKinds = []string{"Academy", "High School", "Primary School", "Community School", "Church of England School", "Junior School"}
)

// A shuffled-looking two-letter prefix and digits, as batch numbers on vaccine packs look.
func batchName(r *rand.Rand) string {
	const letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
	b := []byte{letters[r.IntN(len(letters))], letters[r.IntN(len(letters))]}
	for range 4 {
		b = append(b, byte('0'+r.IntN(10)))
	}
	return string(b)
}
