// Command goroutines_pprof parks N goroutines three frames deep (idleA → idleB → idle, each holding a
// local) and serves net/http/pprof on loopback, so a benchmark can time goprobe's snapshot beside
// /debug/pprof/goroutine?debug=2 on the very same process.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"sync"
)

var (
	park    = make(chan struct{})
	reached sync.WaitGroup
)

//go:noinline
func idleA(i int) int {
	a := i*3 + 1
	return idleB(i) + a
}

//go:noinline
func idleB(i int) int {
	b := i*5 + 2
	return idle(i) + b
}

//go:noinline
func idle(i int) int {
	c := i*7 + 3
	reached.Done()
	<-park
	return c
}

func main() {
	n := flag.Int("n", 1000, "goroutines to park")
	flag.Parse()
	reached.Add(*n)
	for i := 0; i < *n; i++ {
		go idleA(i)
	}
	reached.Wait()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println("ready", ln.Addr())
	panic(http.Serve(ln, nil))
}
