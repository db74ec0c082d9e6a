package handlers

import (
	"net/http"
	"testing"
)

// BenchmarkCreateOrder is one authenticated POST /api/orders over a real
// listener into the embedded store, from 16 clients per CPU at once (so
// the store's group commit shares fsyncs).
func BenchmarkCreateOrder(b *testing.B) {
	e := newEnv(b, noLimits)
	tok := token(b, "alice", RoleCustomer)
	r := req{method: "POST", path: "/api/orders", body: `{"items":[{"sku":"pizza","qty":1}]}`, token: tok}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res, err := e.try(r); err != nil || res.status != http.StatusCreated {
				b.Errorf("got %d %v", res.status, err)
				return
			}
		}
	})
}

// BenchmarkGetOrder is one authenticated GET /api/orders/:id: token
// check, ownership check and a store read.
func BenchmarkGetOrder(b *testing.B) {
	e := newEnv(b, noLimits)
	o := e.createOrder(b, "alice")
	r := req{method: "GET", path: "/api/orders/" + o.ID, token: token(b, "alice", RoleCustomer)}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res, err := e.try(r); err != nil || res.status != http.StatusOK {
				b.Errorf("got %d %v", res.status, err)
				return
			}
		}
	})
}
