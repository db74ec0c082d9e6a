package mongo

import "strings"

// ComparePositions compares positions a and b in log order, as
// strings.Compare compares strings. It is a total order, safe for
// concurrent use.
//
// Resume tokens of one format version compare bytewise like the log
// (SERVER-29716), and every token starts with its cluster time, so tokens
// of different times compare right as strings whatever their versions.
// Two tokens of the same time and different versions (a server upgrade
// in between) do not: the version is the byte after the time, so a
// version-2 high-water mark would sort after a version-1 event of its
// time, although a high-water mark at T comes before every event at T.
// So positions order by cluster time, then high-water marks (and a bare
// cluster time) before events, then by version, then bytewise. Within one
// version that is the bytewise order. Events of one time in two versions
// (a transaction's events across an upgrade) have no order the tokens
// can tell; they get this one, which is at least a total order.
func (m *Store) ComparePositions(a, b string) int { return comparePositionOrder(a, b) }

// comparePositionOrder is ComparePositions.
func comparePositionOrder(a, b string) int {
	if a == b {
		return 0
	}
	if c := strings.Compare(clusterTimeOf(a), clusterTimeOf(b)); c != 0 {
		return c
	}
	// The key (time, event or not, version, bytes): a lexicographic
	// order on it is total; within one version it is the bytewise order,
	// where high-water marks come before the events of their time.
	if ea, eb := !isHighWaterMark(a), !isHighWaterMark(b); ea != eb {
		if ea {
			return 1
		}
		return -1
	}
	va, _ := tokenVersion(a)
	vb, _ := tokenVersion(b)
	if va != vb {
		if va < vb {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// clusterTimeOf returns the part of a position that holds its cluster
// time: the type byte and 8 bytes, in hex.
func clusterTimeOf(pos string) string { return pos[:min(len(pos), 18)] }

// laterPosition returns the later of positions a and b in log order; ""
// (no position) is earlier than any.
func laterPosition(a, b string) string {
	if comparePositionOrder(a, b) < 0 {
		return b
	}
	return a
}
