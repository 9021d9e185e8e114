// Network servers of the Go peer for benches/compare's http and idle_conns workloads.
// Standard library only. Each listens on --addr, prints "listening on <addr>" once the
// listener is bound (connections from then on queue in its backlog) and serves until killed.

package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// listen binds addr and announces it on stdout.
func listen(addr string) net.Listener {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "goropeer: listen %s: %v\n", addr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	return ln
}

var hello = []byte("Hello, World!")

// httpHello: net/http (HTTP/1.1, keep-alive; a pipelined connection's requests are read and
// answered one after another, in order), 200 "Hello, World!" for every request.
func httpHello(addr string) {
	ln := listen(addr)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", "13")
		w.Write(hello)
	})
	err := (&http.Server{Handler: mux}).Serve(ln)
	fmt.Fprintf(os.Stderr, "goropeer: serve: %v\n", err)
	os.Exit(1)
}

// echo: one goroutine per connection, reading into its own buffer of bufSize bytes (--buf,
// default 4096; it escapes to the heap) and writing back what it read, until EOF or an error. (io.Copy would splice(2) socket to socket through a pipe
// pair per connection on Linux: two more fds and kernel buffers per connection.)
func echo(addr string, bufSize int) {
	ln := listen(addr)
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintf(os.Stderr, "goropeer: accept: %v\n", err)
			time.Sleep(10 * time.Millisecond) // e.g. out of fds: don't spin
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			buf := make([]byte, bufSize)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}(c)
	}
}
