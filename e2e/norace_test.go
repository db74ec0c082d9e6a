//go:build !race

package e2e

// raceBuild is true when the tests are built with -race: the binary under
// test is then built with -race too.
const raceBuild = false
