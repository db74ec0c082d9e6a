package handlers

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
)

// strictKeys checks the objects of raw, a body that decoded as JSON into
// a value of type t, for what encoding/json lets through: a key that
// names a field only when case is ignored (`Text` for `text`), and a key
// given twice (the decoder keeps the last). Either is a 400 naming the
// key. Objects where t has no struct (maps, unknown values) are checked
// for repeated keys only.
func strictKeys(raw []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return checkValue(dec, t, "")
}

// checkValue reads one JSON value from dec, checking it against t (nil
// when unknown); path names where it is, for messages.
func checkValue(dec *json.Decoder, t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return bodyError(err)
	}
	switch tok {
	case json.Delim('{'):
		var fields map[string]reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = jsonFields(t)
		}
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return bodyError(err)
			}
			key := kt.(string)
			at := joinPath(path, key)
			if seen[key] {
				return errorf(http.StatusBadRequest, "field %q is given twice", at)
			}
			seen[key] = true
			var ft reflect.Type
			if fields != nil {
				var ok bool
				if ft, ok = fields[key]; !ok {
					for name := range fields {
						if strings.EqualFold(name, key) {
							return errorf(http.StatusBadRequest, "unknown field %q (field names are case-sensitive: %q)", at, joinPath(path, name))
						}
					}
					return errorf(http.StatusBadRequest, "unknown field %q", at)
				}
			} else if t != nil && t.Kind() == reflect.Map {
				ft = t.Elem()
			}
			if err := checkValue(dec, ft, at); err != nil {
				return err
			}
		}
		_, err := dec.Token() // '}'
		return err
	case json.Delim('['):
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := checkValue(dec, et, path+"[]"); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return nil
}

// jsonFields returns the JSON names of t's fields, as encoding/json
// names them, with their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// joinPath names a field inside path.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
