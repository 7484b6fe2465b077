package demodata

import (
	"math/big"
	"time"
	_ "time/tzdata" // Europe/London must resolve even on images without zoneinfo.
)

func mustLoadLocation(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic("demodata: load time zone " + name + ": " + err.Error())
	}
	return loc
}

func bigInt(n int64) *big.Int { return big.NewInt(n) }
