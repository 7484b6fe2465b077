// Package dps owns the DPS (NHS England Data Processing Service) vaccination
// export file: the record a row is made from, the byte-exact pipe-delimited
// CSV writer, the file name, the row rules of the receiver (NHS England's
// batch pipeline) and a strict checker that applies the same rules to a file.
//
// It writes to an io.Writer and reads from an io.Reader only: it must know
// nothing of NATS, Postgres or MESH, so that the file format can be tested
// (and golden-filed) on its own. The format is ../shared/spec/dps-csv.md.
package dps

import (
	"sync"
	"time"
	_ "time/tzdata" // Europe/London must resolve even in scratch containers without zoneinfo.
)

// Header is the DPS header: the 34 field names, in file order.
var Header = [NumFields]string{
	"NHS_NUMBER", "PERSON_FORENAME", "PERSON_SURNAME", "PERSON_DOB", "PERSON_GENDER_CODE",
	"PERSON_POSTCODE", "DATE_AND_TIME", "SITE_CODE", "SITE_CODE_TYPE_URI", "UNIQUE_ID",
	"UNIQUE_ID_URI", "ACTION_FLAG", "PERFORMING_PROFESSIONAL_FORENAME", "PERFORMING_PROFESSIONAL_SURNAME",
	"RECORDED_DATE", "PRIMARY_SOURCE", "VACCINATION_PROCEDURE_CODE", "VACCINATION_PROCEDURE_TERM",
	"DOSE_SEQUENCE", "VACCINE_PRODUCT_CODE", "VACCINE_PRODUCT_TERM", "VACCINE_MANUFACTURER",
	"BATCH_NUMBER", "EXPIRY_DATE", "SITE_OF_VACCINATION_CODE", "SITE_OF_VACCINATION_TERM",
	"ROUTE_OF_VACCINATION_CODE", "ROUTE_OF_VACCINATION_TERM", "DOSE_AMOUNT", "DOSE_UNIT_CODE",
	"DOSE_UNIT_TERM", "INDICATION_CODE", "LOCATION_CODE", "LOCATION_CODE_TYPE_URI",
}

// NumFields is the number of fields on every line of a DPS file.
const NumFields = 34

// Fixed values and URIs of the format.
const (
	// DefaultUniqueIDURI is UNIQUE_ID_URI when Options.UniqueIDURI is empty.
	DefaultUniqueIDURI = "https://manage-vaccinations-in-schools.nhs.uk/vaccination-records"
	// ODSCodeURI types an ODS organisation code (SITE_CODE, and LOCATION_CODE outside schools).
	ODSCodeURI = "https://fhir.nhs.uk/Id/ods-organization-code"
	// SchoolURNURI types a school URN in LOCATION_CODE.
	SchoolURNURI = "https://fhir.hl7.org.uk/Id/urn-school-number"
	// DoseUnitCode and DoseUnitTerm: doses are held in millilitres.
	DoseUnitCode = "258773002"
	DoseUnitTerm = "Milliliter (qualifier value)"
	// UnknownPostcode is PERSON_POSTCODE when none is held: the NHS "address not known" code. The
	// receiver refuses a row without a postcode.
	UnknownPostcode = "ZZ99 3WZ"
	primarySource   = "TRUE"
	noseSiteCode    = "279549004"
	nasalRouteCode  = "46713006"
)

// Action flags.
const (
	ActionNew    = "new"
	ActionUpdate = "update"
	ActionDelete = "delete"
)

// Record is one vaccination as it goes into a DPS file, in plain typed fields
// as the database holds them; the writer does every formatting decision.
type Record struct {
	NHSNumber   string    // 10 digits, valid mod-11 check digit
	Forename    string    // patient's given name
	Surname     string    // patient's family name
	DateOfBirth time.Time // a calendar date: its own Year/Month/Day are used, no zone conversion
	GenderCode  int       // 0 not known, 1 male, 2 female, 9 not specified
	Postcode    string    // as held; UnknownPostcode is written when empty

	PerformedAt time.Time // instant the vaccine was given; written in Europe/London
	SiteODSCode string    // ODS code of the team that gave it
	UUID        string    // vaccination record UUID; written lower-case
	Action      string    // ActionNew, ActionUpdate or ActionDelete

	VaccinatorFullName string    // split at the first space; empty when unknown
	CreatedAt          time.Time // instant the record was created; RECORDED_DATE in Europe/London

	ProcedureCode string // SNOMED procedure code
	ProcedureTerm string
	DoseSequence  int // 0 = unknown, written as ""
	ProductCode   string
	ProductTerm   string
	Manufacturer  string
	BatchName     string
	BatchExpiry   time.Time // a calendar date; zero = unknown, written as ""

	DeliverySite   string // Mavis name (left_arm_upper_position, ..., nose); empty = unknown
	DeliveryMethod string // Mavis name (intramuscular, subcutaneous, nasal_spray); empty = unknown
	DoseAmount     string // decimal text as held, e.g. "0.5"; empty = unknown

	SchoolURN       string // set when given at a school: LOCATION_CODE is the URN
	LocationODSCode string // otherwise LOCATION_CODE; when empty, SiteODSCode (the team) is used
}

// snomed is a SNOMED CT code with its term.
type snomed struct{ code, term string }

// deliverySites maps Mavis delivery_site values to SNOMED body structures,
// as Mavis's DELIVERY_SITE_SNOMED_CODES_AND_TERMS does.
var deliverySites = map[string]snomed{
	"left_arm_upper_position":  {"368208006", "Structure of left upper arm (body structure)"},
	"right_arm_upper_position": {"368209003", "Structure of right upper arm (body structure)"},
	"left_thigh":               {"61396006", "Structure of left thigh (body structure)"},
	"right_thigh":              {"11207009", "Structure of right thigh (body structure)"},
	"nose":                     {"279549004", "Nasal cavity structure (body structure)"},
}

// deliveryMethods maps Mavis delivery_method values to SNOMED routes.
var deliveryMethods = map[string]snomed{
	"intramuscular": {"78421000", "Intramuscular route (qualifier value)"},
	"subcutaneous":  {"34206005", "Subcutaneous route (qualifier value)"},
	"nasal_spray":   {"46713006", "Nasal route (qualifier value)"},
}

// siteTerms and routeTerms index the same tables by code, for the checker.
var siteTerms, routeTerms = byCode(deliverySites), byCode(deliveryMethods)

func byCode(m map[string]snomed) map[string]string {
	out := make(map[string]string, len(m))
	for _, s := range m {
		out[s.code] = s.term
	}
	return out
}

// London is the Europe/London location every local date and time in a DPS
// file is expressed in. Loaded once; tzdata is embedded, so it cannot fail
// short of a corrupt binary.
var London = sync.OnceValue(func() *time.Location {
	loc, err := time.LoadLocation("Europe/London")
	if err != nil {
		panic("dps: load Europe/London: " + err.Error())
	}
	return loc
})
