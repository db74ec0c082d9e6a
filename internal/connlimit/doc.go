// Package connlimit bounds the connections a server holds and refuses the
// rest fast, and raises the process's limit on open files.
//
// A Listener keeps at most a given number of connections open for
// ordinary traffic and a small reserve more for health checks; a
// connection past both is accepted and closed at once, so a flood of
// connections never runs the server out of file descriptors. MarkReserve
// and ServeReserve make an http.Server answer only health checks on
// reserve connections. RaiseFileLimit and DefaultMax size the bound from
// the limit on open files.
package connlimit
