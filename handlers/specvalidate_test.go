package handlers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// specPath is the API's OpenAPI document, relative to this package.
var specPath = filepath.Join("..", "docs", "openapi.yaml")

// The spec, loaded and validated once for every test.
var (
	specOnce   sync.Once
	specDoc    *openapi3.T
	specRouter routers.Router
	specErr    error
)

// loadSpec returns docs/openapi.yaml, validated, and a router over its
// operations; it fails the test if the document does not load or is not
// valid OpenAPI.
func loadSpec(tb testing.TB) (*openapi3.T, routers.Router) {
	tb.Helper()
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile(specPath)
		if err != nil {
			specErr = fmt.Errorf("load: %w", err)
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			specErr = fmt.Errorf("validate: %w", err)
			return
		}
		router, err := gorillamux.NewRouter(doc)
		if err != nil {
			specErr = fmt.Errorf("router: %w", err)
			return
		}
		specDoc, specRouter = doc, router
	})
	if specErr != nil {
		tb.Fatalf("%s: %v", specPath, specErr)
	}
	return specDoc, specRouter
}

// checkSpec returns next wrapped so that every exchange it serves is
// checked against docs/openapi.yaml: every response (status, headers,
// content type, and the body unless it is an event stream or the answer
// to HEAD), and the request of every 2xx answer (a test that sends a bad
// request on purpose gets an error answer, whose shape is still checked).
// A request the spec has no operation for must get a JSON error, unless
// it is for the demo page's files (outside /api/) or a CORS preflight.
// What does not match fails tb when it ends, once the server has
// stopped. cfg is the server's: in dev mode no credential is required.
func checkSpec(tb testing.TB, cfg Config, next http.Handler) http.Handler {
	tb.Helper()
	sc := newSpecChecker(tb, cfg.Dev)
	tb.Cleanup(func() {
		for _, f := range sc.failures() {
			tb.Errorf("%s: %s", specPath, f)
		}
	})
	return sc.wrap(next)
}

// specChecker checks exchanges against the spec and keeps what did not
// match. It is safe for concurrent use.
type specChecker struct {
	doc    *openapi3.T
	router routers.Router
	dev    bool

	mu   sync.Mutex
	errs []string
}

// maxSpecFailures bounds the failures kept: one drift usually breaks
// every exchange of a test, and the first few say it all.
const maxSpecFailures = 20

// maxCheckedBody bounds the response body kept for checking; the API's
// bodies are far smaller (a page of 200 messages is under 1 MiB).
const maxCheckedBody = 4 << 20

func newSpecChecker(tb testing.TB, dev bool) *specChecker {
	tb.Helper()
	doc, router := loadSpec(tb)
	return &specChecker{doc: doc, router: router, dev: dev}
}

func (sc *specChecker) failf(format string, args ...any) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if len(sc.errs) == maxSpecFailures {
		sc.errs = append(sc.errs, "(more failures left out)")
	}
	if len(sc.errs) < maxSpecFailures {
		sc.errs = append(sc.errs, fmt.Sprintf(format, args...))
	}
}

func (sc *specChecker) failures() []string {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]string(nil), sc.errs...)
}

func (sc *specChecker) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var reqBody bytes.Buffer
		served := r
		if r.Body != nil && r.Body != http.NoBody {
			// The handler reads the body as it likes (slowly, partly, past
			// its limit); the checker sees what it read.
			r2 := *r
			r2.Body = &teeBody{ReadCloser: r.Body, copy: &reqBody}
			served = &r2
		}
		rec := &exchangeRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, served)
		sc.check(r, reqBody.Bytes(), rec.result())
	})
}

// teeBody copies what is read of a request body.
type teeBody struct {
	io.ReadCloser
	copy *bytes.Buffer
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.copy.Write(p[:n])
	return n, err
}

// recorded is what a response was, as the client got it.
type recorded struct {
	status int
	header http.Header
	body   []byte
}

// exchangeRecorder notes a response's status, its headers as sent and
// its body (not an event stream's), passing everything through. It lets
// the stream take the connection over (Hijack) and flush, as the real
// writer does; a connection taken over answers 200 with the headers set
// so far.
type exchangeRecorder struct {
	http.ResponseWriter
	status int
	header http.Header
	body   bytes.Buffer
	stream bool
}

func (r *exchangeRecorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
		r.header = r.ResponseWriter.Header().Clone()
		r.stream = isEventStream(r.header.Get("Content-Type"))
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *exchangeRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	if !r.stream && r.body.Len()+len(p) <= maxCheckedBody {
		r.body.Write(p)
	}
	return r.ResponseWriter.Write(p)
}

// Flush sends what is buffered, as http.Flusher.
func (r *exchangeRecorder) Flush() {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Hijack takes the connection over, as http.Hijacker.
func (r *exchangeRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.status == 0 {
		r.status = http.StatusOK
		r.header = r.ResponseWriter.Header().Clone()
		r.stream = isEventStream(r.header.Get("Content-Type"))
	}
	return conn, brw, err
}

// Unwrap gives http.ResponseController the writer underneath.
func (r *exchangeRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *exchangeRecorder) result() recorded {
	if r.status == 0 { // nothing written: net/http answers 200
		r.status = http.StatusOK
		r.header = r.ResponseWriter.Header().Clone()
	}
	if r.header.Get("Content-Type") == "" && r.body.Len() > 0 {
		// What net/http sends for a body written without a type.
		r.header.Set("Content-Type", http.DetectContentType(r.body.Bytes()))
	}
	return recorded{status: r.status, header: r.header, body: r.body.Bytes()}
}

func isJSON(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt == "application/json"
}

func isEventStream(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt == "text/event-stream"
}

// check checks one exchange.
func (sc *specChecker) check(r *http.Request, reqBody []byte, res recorded) {
	if r.Method == http.MethodOptions {
		return // a CORS preflight, answered before routing
	}
	what := fmt.Sprintf("%s %s answered %d", r.Method, clip(redactToken(r.URL), 200), res.status)
	ctx := context.WithoutCancel(r.Context())
	route, params, err := sc.router.FindRoute(r)
	if err != nil {
		if errors.Is(err, routers.ErrMethodNotAllowed) || strings.HasPrefix(r.URL.Path, "/api/") {
			sc.checkUndocumented(what, r, res)
		}
		return // the demo page's files
	}

	// The request, when the server took it.
	input := &openapi3filter.RequestValidationInput{
		Request:    withBody(r, r.Method, reqBody),
		PathParams: params,
		Route:      route,
		Options:    &openapi3filter.Options{AuthenticationFunc: sc.authenticate},
	}
	if res.status >= 200 && res.status < 300 {
		if err := openapi3filter.ValidateRequest(ctx, input); err != nil {
			sc.failf("%s, but the request does not match the spec: %s", what, short(err))
		}
	}

	if route.Path == "/metrics" && res.status != http.StatusOK && !isJSON(res.header.Get("Content-Type")) {
		// Not the server's refusal (always JSON) but Config.Metrics's own
		// answer, which tests give to a stand-in for Prometheus's handler.
		return
	}

	// The response: its status must be documented, its content type one
	// of the documented ones.
	ref := route.Operation.Responses.Status(res.status)
	if ref == nil || ref.Value == nil {
		sc.failf("%s, a status the spec does not list for %s %s", what, r.Method, route.Path)
		return
	}
	ct := res.header.Get("Content-Type")
	if content := ref.Value.Content; len(content) > 0 && content.Get(ct) == nil {
		sc.failf("%s with Content-Type %q, which the spec does not list for it", what, ct)
		return
	}
	// kin-openapi checks nothing of a HEAD answer: check its headers as a
	// GET's, against the HEAD operation.
	head := r.Method == http.MethodHead
	if head {
		input.Request = withBody(r, http.MethodGet, nil)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: input,
		Status:                 res.status,
		Header:                 res.header,
		Body:                   io.NopCloser(bytes.NewReader(res.body)),
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			ExcludeResponseBody:   head || isEventStream(ct),
		},
	}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		sc.failf("%s, which does not match the spec: %s", what, short(err))
	}
}

// checkUndocumented checks the answer to a request the spec has no
// operation for: a JSON error.
func (sc *specChecker) checkUndocumented(what string, r *http.Request, res recorded) {
	if res.status < 400 {
		sc.failf("%s, but the spec has no operation %s %s", what, r.Method, r.URL.Path)
		return
	}
	if r.Method == http.MethodHead {
		return
	}
	sc.checkSchema(what, "Error", res.body)
}

// checkSchema checks body against the spec's component schema name.
func (sc *specChecker) checkSchema(what, name string, body []byte) {
	ref := sc.doc.Components.Schemas[name]
	if ref == nil {
		sc.failf("the spec has no schema %s", name)
		return
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		sc.failf("%s with a body that is not JSON (%v): %.200q", what, err, body)
		return
	}
	if err := ref.Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
		sc.failf("%s with a body that is not a %s: %s", what, name, short(err))
	}
}

// authenticate is the checker's openapi3filter.AuthenticationFunc: a
// request meets a security scheme when it carries a credential where the
// scheme says (the server has checked the credential itself). In dev
// mode none is needed.
func (sc *specChecker) authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if sc.dev {
		return nil
	}
	r, s := in.RequestValidationInput.Request, in.SecurityScheme
	switch {
	case s.Type == "http" && strings.EqualFold(s.Scheme, "bearer"):
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(tok) != "" {
			return nil
		}
	case s.Type == "apiKey" && s.In == "cookie":
		if c, err := r.Cookie(s.Name); err == nil && c.Value != "" {
			return nil
		}
	case s.Type == "apiKey" && s.In == "query":
		if r.URL.Query().Get(s.Name) != "" {
			return nil
		}
	case s.Type == "apiKey" && s.In == "header":
		if r.Header.Get(s.Name) != "" {
			return nil
		}
	}
	return fmt.Errorf("no credential for security scheme %s", in.SecuritySchemeName)
}

// redactToken returns u's path and query without the value of a token
// in the query, which a failure message would show.
func redactToken(u *url.URL) string {
	q := u.Query()
	if !q.Has(QueryTokenParam) {
		return u.RequestURI()
	}
	q.Set(QueryTokenParam, "REDACTED")
	return u.Path + "?" + q.Encode()
}

// withBody returns a copy of r with method and body.
func withBody(r *http.Request, method string, body []byte) *http.Request {
	r2 := r.Clone(context.WithoutCancel(r.Context()))
	r2.Method = method
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.ContentLength = int64(len(body))
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return r2
}

// short clips a validation error, which may quote a whole schema.
func short(err error) string { return clip(strings.Join(strings.Fields(err.Error()), " "), 600) }
