// Package connlimit bounds the connections a server holds and refuses the
// rest fast, and raises the process's limit on open files.
//
// A Listener keeps at most a given number of connections open for
// ordinary traffic and a small reserve more for health checks. When it is
// full, a new connection takes the place of one that serves no request
// (first one that has not sent a whole request header, then the longest
// idle keep-alive one) once that one has served nothing for a short
// grace; a connection serving a request or a stream keeps its place. So a
// flood of idle connections never runs the server out of file
// descriptors, nor keeps working clients out. An answer has a deadline
// to reach its client, so a client that does not read cannot hold a
// place either. Serve, ConnContext and
// ConnState, set on the http.Server, tell the Listener which connections
// serve requests, and make it answer only health checks on reserve
// connections. RaiseFileLimit and DefaultMax size the bound from the
// limit on open files.
package connlimit
