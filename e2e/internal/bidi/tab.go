package bidi

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Tab is one browsing context (a top-level tab). Its methods are safe for
// concurrent use.
type Tab struct {
	b  *Browser
	id string
}

// FirstTab returns the tab Firefox opened at start.
func (b *Browser) FirstTab(ctx context.Context) (*Tab, error) {
	raw, err := b.Call(ctx, "browsingContext.getTree", map[string]any{"maxDepth": 0})
	if err != nil {
		return nil, err
	}
	var tree struct {
		Contexts []struct {
			Context string `json:"context"`
		} `json:"contexts"`
	}
	if err := json.Unmarshal(raw, &tree); err != nil {
		return nil, fmt.Errorf("bidi browsingContext.getTree: %w", err)
	}
	if len(tree.Contexts) == 0 {
		return nil, fmt.Errorf("bidi browsingContext.getTree: no top-level context")
	}
	return &Tab{b: b, id: tree.Contexts[0].Context}, nil
}

// NewTab opens a new tab.
func (b *Browser) NewTab(ctx context.Context) (*Tab, error) {
	raw, err := b.Call(ctx, "browsingContext.create", map[string]any{"type": "tab"})
	if err != nil {
		return nil, err
	}
	var r struct {
		Context string `json:"context"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.Context == "" {
		return nil, fmt.Errorf("bidi browsingContext.create: answer %s: %v", raw, err)
	}
	return &Tab{b: b, id: r.Context}, nil
}

// Close closes the tab, as a user does (the page unloads).
func (t *Tab) Close(ctx context.Context) error {
	_, err := t.b.Call(ctx, "browsingContext.close", map[string]any{"context": t.id, "promptUnload": false})
	return err
}

// ID returns the tab's browsing context id, as LogEntry.Context names it.
func (t *Tab) ID() string { return t.id }

// Navigate loads url and waits until the page has loaded (its load event).
func (t *Tab) Navigate(ctx context.Context, url string) error {
	_, err := t.b.Call(ctx, "browsingContext.navigate", map[string]any{"context": t.id, "url": url, "wait": "complete"})
	return err
}

// ScriptError is a JavaScript exception thrown by an evaluated script (or
// a rejected promise it returned).
type ScriptError struct {
	// Text is the exception's message.
	Text string
}

func (e *ScriptError) Error() string { return "script threw: " + e.Text }

// Eval evaluates a JavaScript expression in the tab, awaits it if it is a
// promise, and returns its value decoded: a string, a float64 (NaN and the
// infinities too), a bool, nil for undefined and null, []any for an array
// or a set, map[string]any for an object or a map with string keys. Other
// values (nodes, functions...) come back as a string naming their type. It
// returns a *ScriptError if the script throws.
func (t *Tab) Eval(ctx context.Context, expr string) (any, error) {
	raw, err := t.b.Call(ctx, "script.evaluate", map[string]any{
		"expression":      expr,
		"target":          map[string]any{"context": t.id},
		"awaitPromise":    true,
		"resultOwnership": "none",
	})
	if err != nil {
		return nil, err
	}
	var r struct {
		Type             string          `json:"type"`
		Result           json.RawMessage `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("bidi script.evaluate: answer %s: %w", raw, err)
	}
	if r.Type == "exception" {
		return nil, &ScriptError{Text: r.ExceptionDetails.Text}
	}
	return DecodeValue(r.Result)
}

// DecodeValue decodes a BiDi remote value (script.RemoteValue) as Eval
// describes.
func DecodeValue(raw json.RawMessage) (any, error) {
	var v struct {
		Type  string          `json:"type"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("bidi: remote value %s: %w", raw, err)
	}
	switch v.Type {
	case "undefined", "null":
		return nil, nil
	case "string":
		var s string
		err := json.Unmarshal(v.Value, &s)
		return s, err
	case "boolean":
		var b bool
		err := json.Unmarshal(v.Value, &b)
		return b, err
	case "number":
		// Special numbers come as strings.
		var s string
		if json.Unmarshal(v.Value, &s) == nil {
			switch s {
			case "NaN":
				return math.NaN(), nil
			case "-0":
				return math.Copysign(0, -1), nil
			case "Infinity":
				return math.Inf(1), nil
			case "-Infinity":
				return math.Inf(-1), nil
			}
			return nil, fmt.Errorf("bidi: number %q", s)
		}
		var f float64
		err := json.Unmarshal(v.Value, &f)
		return f, err
	case "bigint":
		var s string
		if err := json.Unmarshal(v.Value, &s); err != nil {
			return nil, err
		}
		f, err := strconv.ParseFloat(s, 64)
		return f, err
	case "array", "set":
		var items []json.RawMessage
		if err := json.Unmarshal(v.Value, &items); err != nil {
			return nil, fmt.Errorf("bidi: %s value: %w", v.Type, err)
		}
		out := make([]any, len(items))
		for i, it := range items {
			x, err := DecodeValue(it)
			if err != nil {
				return nil, err
			}
			out[i] = x
		}
		return out, nil
	case "object", "map":
		var pairs [][2]json.RawMessage
		if err := json.Unmarshal(v.Value, &pairs); err != nil {
			return nil, fmt.Errorf("bidi: %s value: %w", v.Type, err)
		}
		out := make(map[string]any, len(pairs))
		for _, p := range pairs {
			var key string
			if err := json.Unmarshal(p[0], &key); err != nil {
				k, err := DecodeValue(p[0])
				if err != nil {
					return nil, err
				}
				s, ok := k.(string)
				if !ok {
					return nil, fmt.Errorf("bidi: %s key %s is not a string", v.Type, p[0])
				}
				key = s
			}
			x, err := DecodeValue(p[1])
			if err != nil {
				return nil, err
			}
			out[key] = x
		}
		return out, nil
	default:
		return "<" + v.Type + ">", nil
	}
}
