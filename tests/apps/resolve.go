// Resolve each name given to its first IPv4 address with Go's own resolver (which
// reads /etc/hosts and /etc/resolv.conf; nacre package --dns writes the latter), and
// print one line per name, as resolve.c does: "NAME ADDRESS" or
// "NAME error: not resolved".
//
// Build: CGO_ENABLED=0 go build -o resolve_go resolve.go
// Usage: resolve_go NAME...    exits 0
package main

import (
	"context"
	"fmt"
	"net"
	"os"
)

func main() {
	for _, name := range os.Args[1:] {
		ips, err := net.DefaultResolver.LookupIP(context.Background(), "ip4", name)
		if err != nil || len(ips) == 0 {
			fmt.Printf("%s error: not resolved\n", name)
			continue
		}
		fmt.Printf("%s %s\n", name, ips[0])
	}
}
