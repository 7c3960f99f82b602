// Package integration holds black-box tests of the real binaries: they
// build connectserver, connectclient and the example WebSocket bearer, start
// servers from configuration strings on loopback ports, and drive them with
// connectclient and raw sockets. There is no non-test code here.
package integration
