package main

import (
	"fmt"
	"io"
	"net"
)

// loopback reports whether a listen address binds only this machine. An empty host (":8000")
// binds every interface.
func loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = listen
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// warnExposed prints a startup warning when a service listens beyond loopback with no
// authentication: the defaults bind loopback, so this is a choice worth a second look.
func warnExposed(w io.Writer, service, listen string, authenticated bool, fix string) {
	if authenticated || loopback(listen) {
		return
	}
	fmt.Fprintf(w, "warning: %s listens on %s, beyond this machine, without authentication: anyone who can reach it can use it. %s\n", service, listen, fix)
}
