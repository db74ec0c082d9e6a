package handlers

import (
	"context"
	"slices"
	"time"
)

// Roles a token may carry.
const (
	RoleCustomer = "customer"
	RoleStaff    = "staff"
)

// Principal is who makes a request: the token's claims, or in dev mode a
// staff member who may read every room.
type Principal struct {
	// Subject is the token's "sub": the user.
	Subject string
	// Role is RoleCustomer or RoleStaff.
	Role string
	// Rooms are the rooms the token lists, which the principal may read
	// and post to; "*" is all. The app's backend may grant others
	// (RoomAuth).
	Rooms []string
	// Expires is the token's "exp"; zero means never (dev mode).
	Expires time.Time
	// Dev is true when auth is off (-dev mode).
	Dev bool
}

// IsStaff reports whether p may do everything.
func (p Principal) IsStaff() bool { return p.Role == RoleStaff }

// CanRoom reports whether p's token lists room (or "*"). Whether p may
// use a room it does not list is the app's backend's say: every route
// asks server.roomAccess, which calls this first.
func (p Principal) CanRoom(room string) bool {
	return slices.Contains(p.Rooms, "*") || slices.Contains(p.Rooms, room)
}

// CanOrder reports whether p may read and watch an order of customer.
func (p Principal) CanOrder(customer string) bool {
	return p.IsStaff() || p.Subject == customer
}

type principalKey struct{}

// WithPrincipal returns a copy of ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal ctx carries, and whether it has one.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
