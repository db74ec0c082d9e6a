// Package handlers is changecast's HTTP layer: the Echo routes of the REST
// API and the Server-Sent Events streams, authentication and authorization,
// the mapping of errors to statuses, request logging and the bounds that
// keep one client from exhausting the service.
//
// Every route is listed in routes.go. Handlers validate and authorize a
// request before they touch the store; a stream route hands the response to
// the multiplexer (Config.Streams), which alone writes it from then on.
//
// Errors are answered in one place (the server's HTTPErrorHandler) as
// {"error": "<message>"}; a 5xx answer never carries internal details, the
// real error is logged once instead.
//
// This package and cmd/changecast are the only ones that import Echo.
package handlers
