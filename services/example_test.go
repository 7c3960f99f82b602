package services_test

import (
	"errors"
	"fmt"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
)

const playerXML = `<service name="example.player" version="1.0">
  <struct name="Track">
    <field name="title" type="string"/>
    <field name="duration" type="float"/>
    <field name="tags" type="string[]"/>
  </struct>
  <method name="play" returns="bool">
    <arg name="track" type="Track"/>
    <arg name="position" type="float"/>
  </method>
</service>`

// A method call's arguments: convenient Go values in, the wire bytes, the
// canonical values out, typed JSON for the HTTP API and text for people.
func Example() {
	s, err := servicefile.Parse("player.xml", []byte(playerXML))
	if err != nil {
		fmt.Println(err)
		return
	}
	play := s.Method("play")

	args := map[string]any{
		"track":    map[string]any{"title": "Blue in Green", "duration": 337.5, "tags": []string{"jazz"}},
		"position": 12, // any Go integer converts to a float when exact
	}
	wire, err := services.AppendArgs(nil, play.Args, args)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d bytes on the wire\n", len(wire))

	got, err := services.DecodeArgs(play.Args, wire)
	if err != nil {
		fmt.Println(err)
		return
	}
	js, _ := services.MarshalJSON(play.Args[0].Type, got["track"])
	fmt.Println(string(js))
	fmt.Println(services.FormatText(play.Args[1].Type, got["position"]))

	// A value from the command line: connectclient call example.player.play position=1e1 ...
	pos, _ := services.ParseText(play.Args[1].Type, "1e1")
	fmt.Println(pos)

	// Errors say where.
	args["track"] = map[string]any{"title": "x", "duration": 1.0, "tags": []any{"ok", 7}}
	_, err = services.AppendArgs(nil, play.Args, args)
	fmt.Println(err, errors.Is(err, services.ErrType))
	_, err = services.DecodeArgs(play.Args, wire[:26])
	fmt.Println(err)

	// Output:
	// 36 bytes on the wire
	// {"title":"Blue in Green","duration":337.5,"tags":["jazz"]}
	// 12
	// 10
	// services: encode args.track.tags[1]: want string, got int 7 true
	// services: decode args.track.tags[0] at offset 23: string of 4 bytes, only 2 left
}
