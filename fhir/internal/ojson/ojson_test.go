package ojson

import "testing"

// Compact JSON comes back byte for byte: member order, number text and
// string escapes are kept.
func TestRoundTrip(t *testing.T) {
	for _, in := range []string{
		`{"b":1,"a":[1.50,-0,2e10,"x\u00e9\"\\",true,false,null,{}],"c":{"z":[],"y":"<&>"}}`,
		`[]`, `"s"`, `12`,
	} {
		n, err := Parse([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if out := string(n.Encode("")); out != in {
			t.Errorf("round trip\n got %s\nwant %s", out, in)
		}
	}
	n, _ := Parse([]byte("{ \"a\" : [ 1 , \"x\" ] }"))
	if out := string(n.Encode("")); out != `{"a":[1,"x"]}` {
		t.Errorf("white space: %s", out)
	}
	if _, err := Parse([]byte(`{"a":1} x`)); err == nil {
		t.Error("data after the value accepted")
	}
}

func TestSetGet(t *testing.T) {
	n := MustParse(`{"a":1,"b":2}`)
	n.Set("a", String("one"))
	n.Set("c", MustParse(`[3]`))
	if out := string(n.Encode("")); out != `{"a":"one","b":2,"c":[3]}` {
		t.Errorf("Set: %s", out)
	}
	if n.Get("a").Str() != "one" || n.Get("b").Str() != "" || n.Get("x") != nil || len(n.Get("c").Items()) != 1 || n.Get("a").Items() != nil {
		t.Error("Get/Str/Items")
	}
}
