package config

import (
	"reflect"
	"strings"
	"testing"
)

// TestControlSettings checks the control connection's settings on
// <resume>: secondaryBindPort, secondaryConnectPort and maxRetries, their
// defaults and their file:line errors.
func TestControlSettings(t *testing.T) {
	s, err := Parse("c.xml", []byte("<connectserver>"+adapterTCP+"</connectserver>"))
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Resume; r.SecondaryBindPort != 0 || r.SecondaryConnectPort != 0 || r.MaxRetries != DefaultMaxRetries {
		t.Errorf("defaults: %+v", r)
	}
	s, err = Parse("c.xml", []byte(`<connectserver><resume secondaryBindPort="9600" secondaryConnectPort="19600" maxRetries="3"/>`+adapterTCP+`</connectserver>`))
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Resume; r.SecondaryBindPort != 9600 || r.SecondaryConnectPort != 19600 || r.MaxRetries != 3 {
		t.Errorf("set: %+v", r)
	}
	_, err = Parse("c.xml", []byte("<connectserver>\n<resume secondaryBindPort=\"65536\"\n secondaryConnectPort=\"-1\"\n maxRetries=\"0\"/>\n"+adapterTCP+"\n</connectserver>"))
	want := []string{
		`c.xml:2: resume attribute "secondaryBindPort": "65536" is not an integer from 0 to 65535`,
		`c.xml:3: resume attribute "secondaryConnectPort": "-1" is not an integer from 0 to 65535`,
		`c.xml:4: resume attribute "maxRetries": "0" is not an integer from 1 to 1000`,
	}
	if got := problemLines(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
