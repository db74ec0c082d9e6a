package handlers

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"changecast/store"
)

// createOrderRequest is the body of POST /api/orders.
type createOrderRequest struct {
	Customer string       `json:"customer"`
	Items    []store.Item `json:"items"`
}

// patchOrderRequest is the body of PATCH /api/orders/:id.
type patchOrderRequest struct {
	Status string `json:"status"`
}

// maxCancelAttempts bounds how often a customer's cancel re-reads an
// order that changed between the read and the write. Staff moves race
// with it rarely; three rounds settle any real contention.
const maxCancelAttempts = 3

// createOrder handles POST /api/orders: 201 with the order and its
// Location. A customer orders for itself; staff (and dev mode) name the
// customer in the body.
func (s *server) createOrder(c echo.Context) error {
	p := principal(c)
	if err := s.allowWrite(c, p); err != nil {
		return err
	}
	var req createOrderRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if err := refuseControl("customer", req.Customer); err != nil {
		return err
	}
	for i, it := range req.Items {
		if err := refuseControl("items["+strconv.Itoa(i)+"].sku", it.SKU); err != nil {
			return err
		}
	}
	customer := req.Customer
	if !p.IsStaff() {
		if customer != "" && customer != p.Subject {
			return errorf(http.StatusForbidden, "a customer orders only for itself")
		}
		customer = p.Subject
	}
	if err := store.ValidateOrder(customer, req.Items); err != nil {
		return errorf(http.StatusBadRequest, "%s", invalidText(err))
	}
	o, err := s.store.CreateOrder(c.Request().Context(), customer, req.Items)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/orders/"+o.ID)
	setETag(c, o)
	return c.JSON(http.StatusCreated, o)
}

// getOrder handles GET /api/orders/:id.
func (s *server) getOrder(c echo.Context) error {
	o, err := s.loadOrder(c, principal(c), c.Param("id"))
	if err != nil {
		return err
	}
	setETag(c, o)
	return c.JSON(http.StatusOK, o)
}

// patchOrder handles PATCH /api/orders/:id: it moves the order to the
// body's status, if the order still has the If-Match version when one is
// given. Staff may make any move the status machine allows; a customer
// may only cancel its own order while it is placed.
func (s *server) patchOrder(c echo.Context) error {
	p := principal(c)
	if err := s.allowWrite(c, p); err != nil {
		return err
	}
	ifVersion, err := parseIfMatch(c.Request().Header.Values(headerIfMatch))
	if err != nil {
		return err
	}
	var req patchOrderRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Status == "" {
		return errorf(http.StatusBadRequest, "status is required")
	}
	if !store.ValidStatus(req.Status) {
		return errorf(http.StatusBadRequest, "unknown status %s: a status is one of %s",
			strconv.QuoteToASCII(clip(req.Status, 100)), strings.Join(statuses, ", "))
	}
	id := c.Param("id")
	ctx := c.Request().Context()
	if p.IsStaff() {
		if !store.ValidOrderID(id) {
			return errOrderNotFound
		}
		o, err := s.store.UpdateOrderStatus(ctx, id, req.Status, ifVersion)
		if errors.Is(err, store.ErrConflict) {
			return s.conflict(c, id, req.Status, err)
		}
		if err != nil {
			return err
		}
		setETag(c, o)
		return c.JSON(http.StatusOK, o)
	}

	// A customer: the checks below hold for the version read, and the
	// write is conditional on that version, so no staff move slips in
	// between.
	for attempt := 1; ; attempt++ {
		o, err := s.loadOrder(c, p, id)
		if err != nil {
			return err
		}
		if ifVersion != 0 && o.Version != ifVersion {
			return store.ErrVersionMismatch
		}
		if req.Status != store.StatusCancelled {
			return customerRefused(o, "a customer may only cancel an order, not move it to "+req.Status)
		}
		if o.Status != store.StatusPlaced {
			return customerRefused(o, "a customer may only cancel a placed order, and this one is "+o.Status)
		}
		updated, err := s.store.UpdateOrderStatus(ctx, id, req.Status, o.Version)
		if errors.Is(err, store.ErrVersionMismatch) && ifVersion == 0 && attempt < maxCancelAttempts {
			continue
		}
		if err != nil {
			return err
		}
		setETag(c, updated)
		return c.JSON(http.StatusOK, updated)
	}
}

// statuses are the order statuses, in the order an order moves through
// them.
var statuses = []string{store.StatusPlaced, store.StatusPreparing, store.StatusOutForDelivery,
	store.StatusDelivered, store.StatusCancelled}

// conflict answers a staff move the store refused as a transition its
// status machine does not allow (err wraps store.ErrConflict): 409 saying
// from which status, with the statuses the order may move to. It reads
// the order again to learn its status; if that now allows the move (the
// order moved in between), or cannot be read, the answer is a plain 409.
func (s *server) conflict(c echo.Context, id, to string, err error) error {
	o, gerr := s.store.GetOrder(c.Request().Context(), id)
	if gerr != nil || store.CanTransition(o.Status, to) {
		return err
	}
	msg := "cannot move an order from " + o.Status + " to " + to
	if o.Status == to {
		msg = "the order is already " + to
	}
	return &apiError{status: http.StatusConflict, body: errorBody{Error: msg, Allowed: store.NextStatuses(o.Status)}}
}

// customerRefused is the 403 for a move a customer may not make on o,
// listing the moves it may make (cancelled, while o is placed).
func customerRefused(o store.Order, msg string) error {
	allowed := []string{}
	if o.Status == store.StatusPlaced {
		allowed = append(allowed, store.StatusCancelled)
	}
	return &apiError{status: http.StatusForbidden, body: errorBody{Error: msg, Allowed: allowed}}
}

// loadOrder returns the order id if p may see it. An unknown, malformed
// or foreign id answers the same 404.
func (s *server) loadOrder(c echo.Context, p Principal, id string) (store.Order, error) {
	if !store.ValidOrderID(id) {
		return store.Order{}, errOrderNotFound
	}
	o, err := s.store.GetOrder(c.Request().Context(), id)
	if err != nil {
		return store.Order{}, err
	}
	if !p.CanOrder(o.Customer) {
		return store.Order{}, errOrderNotFound
	}
	return o, nil
}

// setETag sets the order's version as its entity tag, the value a client
// sends back in If-Match.
func setETag(c echo.Context, o store.Order) {
	c.Response().Header().Set(headerETag, strconv.Quote(strconv.FormatInt(o.Version, 10)))
}

// parseIfMatch returns the version an If-Match header asks for: 0 for
// none or "*", else a positive integer, bare or quoted ("3" or 3). Any
// other value is a 400.
func parseIfMatch(values []string) (int64, error) {
	if len(values) == 0 {
		return 0, nil
	}
	bad := errorf(http.StatusBadRequest, `If-Match must be one order version, like "3"`)
	if len(values) > 1 {
		return 0, bad
	}
	v := strings.TrimSpace(values[0])
	if v == "*" {
		return 0, nil
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if v == "" || v[0] < '0' || v[0] > '9' {
		return 0, bad
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, bad
	}
	return n, nil
}

// Conditional-request headers (Echo names neither).
const (
	headerIfMatch = "If-Match"
	headerETag    = "ETag"
)

// ordersPage is the answer of GET /api/orders.
type ordersPage struct {
	Orders []store.Order `json:"orders"`
}

// Values of GET /api/orders' status parameter.
const (
	listStatusActive = "active"
	listStatusAll    = "all"
)

// listOrders handles GET /api/orders?status=&customer=&limit=&before=:
// up to limit (1 to store.MaxListLimit, default 50) orders older than
// order id before (default: the newest), newest first; status active
// keeps orders not delivered or cancelled, all (the default) keeps
// every one. Staff see everyone's orders, or customer's; a customer sees
// only its own, and naming another customer is a 403.
func (s *server) listOrders(c echo.Context) error {
	p := principal(c)
	var q store.OrderQuery
	switch c.QueryParam("status") {
	case "", listStatusAll:
	case listStatusActive:
		q.Active = true
	default:
		return errorf(http.StatusBadRequest, "status must be %s or %s", listStatusActive, listStatusAll)
	}
	q.Customer = c.QueryParam("customer")
	if q.Customer != "" && !store.ValidCustomer(q.Customer) {
		return errorf(http.StatusBadRequest, "customer must be a customer's name")
	}
	if !p.IsStaff() {
		if q.Customer != "" && q.Customer != p.Subject {
			return errorf(http.StatusForbidden, "a customer sees only its own orders")
		}
		q.Customer = p.Subject
	}
	q.Limit = store.DefaultListLimit
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxListLimit {
			return errorf(http.StatusBadRequest, "limit must be an integer from 1 to %d", store.MaxListLimit)
		}
		q.Limit = n
	}
	q.Before = c.QueryParam("before")
	if q.Before != "" && !store.ValidOrderID(q.Before) {
		return errorf(http.StatusBadRequest, "before must be an order id")
	}
	orders, err := s.store.ListOrders(c.Request().Context(), q)
	if err != nil {
		return err
	}
	if orders == nil {
		orders = []store.Order{}
	}
	return c.JSON(http.StatusOK, ordersPage{Orders: orders})
}
