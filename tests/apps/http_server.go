// A Go net/http server, as Go services are written: the runtime's netpoller (epoll,
// edge triggered, non-blocking sockets) on several threads, one goroutine per
// connection, keep-alive.
//
// GET /quit answers and ends the server (exit 0) after printing how many requests
// it served; GET /PATH answers "hello PATH\n"; GET /big/N answers N bytes of a
// pattern ('a' + i % 26), the same as http_server.c.
//
// Build: CGO_ENABLED=0 go build -o http_server_go http_server.go
// Usage: http_server_go PORT    prints "listening" once it accepts connections
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

func main() {
	port := "18190"
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	var served atomic.Int64
	quit := make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		path := strings.TrimPrefix(r.URL.Path, "/")
		w.Header().Set("Content-Type", "text/plain")
		if strings.HasPrefix(path, "big/") {
			size, err := strconv.Atoi(path[len("big/"):])
			if err != nil || size < 0 || size > 64<<20 {
				size = 0
			}
			body := make([]byte, size)
			for i := range body {
				body[i] = byte('a' + i%26)
			}
			w.Header().Set("Content-Length", strconv.Itoa(size))
			w.Write(body)
			return
		}
		body := "hello " + path + "\n"
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if path == "quit" {
			w.Header().Set("Connection", "close")
		}
		w.Write([]byte(body))
		if path == "quit" {
			close(quit)
		}
	})
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening")
	server := &http.Server{Handler: handler}
	go server.Serve(ln)
	<-quit
	ln.Close()
	fmt.Printf("served %d\n", served.Load())
}
