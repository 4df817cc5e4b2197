// Command goroutines_pprof parks N goroutines and serves net/http/pprof on loopback, so a benchmark can time
// goprobe's snapshot beside /debug/pprof/goroutine?debug=2 on the very same process.
//
// -shape picks where they park:
//
//	ints    three frames deep (idleA → idleB → idle), each holding an int local
//	struct  in handle(o *Order): a struct of an int64, a short string, a 2-item slice of small structs,
//	        a 2-entry map[string]string and an interface (issue 20's request)
//	rich    ten frames deep (stage0 … stage9), each holding values of every kind
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"strconv"
	"sync"
	"time"
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

type Item struct {
	SKU   string
	Count int32
	Price float64
}

type Status interface{ Code() int }

type Shipped struct {
	Carrier string
	Day     int
}

func (s *Shipped) Code() int { return s.Day }

type Order struct {
	ID     int64
	Name   string
	Items  []Item
	Meta   map[string]string
	Status Status
}

func newOrder(i int) *Order {
	return &Order{
		ID:    int64(i),
		Name:  "order-" + strconv.Itoa(i),
		Items: []Item{{"sku-" + strconv.Itoa(i), 2, 9.5}, {"sku-x", 1, 120}},
		Meta:  map[string]string{"region": "eu-" + strconv.Itoa(i%7), "tier": "gold"},
		Status: &Shipped{
			Carrier: "post", Day: i % 31,
		},
	}
}

//go:noinline
func handle(o *Order) int {
	reached.Done()
	<-park
	return int(o.ID)
}

// The rich request's frames: each stage holds a few values of its own kinds and calls the next.

type Point struct{ X, Y int }

type Node struct {
	Val  int
	Next *Node
}

//go:noinline
func stage0(i int, o *Order) int {
	name := "stage0-" + strconv.Itoa(i)
	r := stage1(i, o, name)
	return r + len(name) + len(o.Name)
}

//go:noinline
func stage1(i int, o *Order, name string) int {
	pts := []Point{{i, i + 1}, {i + 2, i + 3}, {i + 4, i + 5}}
	r := stage2(i, o, pts)
	return r + len(name) + len(pts) + len(o.Name)
}

//go:noinline
func stage2(i int, o *Order, pts []Point) int {
	counts := map[int]string{i: "a", i + 1: "bb", i + 2: "ccc"}
	r := stage3(i, o, counts)
	return r + len(pts) + len(counts) + len(o.Name)
}

//go:noinline
func stage3(i int, o *Order, counts map[int]string) int {
	var err error = errors.New("stage3 failed " + strconv.Itoa(i))
	var v any = Point{i, -i}
	r := stage4(i, o, err, v)
	return r + len(counts) + len(err.Error()) + len(o.Name) + v.(Point).X
}

//go:noinline
func stage4(i int, o *Order, err error, v any) int {
	list := &Node{i, &Node{i + 1, &Node{i + 2, nil}}}
	r := stage5(i, o, list)
	return r + len(err.Error()) + list.Val + len(o.Name) + v.(Point).Y
}

//go:noinline
func stage5(i int, o *Order, list *Node) int {
	arr := [4]int32{int32(i), 1, 2, 3}
	f := 1.5 * float64(i)
	r := stage6(i, o, arr, f)
	return r + list.Next.Val + int(arr[1]) + int(f) + len(o.Name)
}

//go:noinline
func stage6(i int, o *Order, arr [4]int32, f float64) int {
	ch := make(chan int, 4)
	ch <- i
	r := stage7(i, o, ch)
	return r + int(arr[0]) + int(f) + len(ch) + len(o.Name)
}

//go:noinline
func stage7(i int, o *Order, ch chan int) int {
	fn := strconv.Itoa
	d := time.Duration(i) * time.Millisecond
	r := stage8(i, o, fn, d)
	return r + len(ch) + len(fn(1)) + int(d) + len(o.Name)
}

//go:noinline
func stage8(i int, o *Order, fn func(int) string, d time.Duration) int {
	words := []string{fn(i), "beta", "gamma"}
	ok := i%2 == 0
	r := stage9(i, o, words, ok)
	if ok {
		r += len(words)
	}
	return r + int(d) + len(fn(2)) + len(o.Name)
}

//go:noinline
func stage9(i int, o *Order, words []string, ok bool) int {
	b := []byte("payload-" + strconv.Itoa(i))
	reached.Done()
	<-park
	if ok {
		return len(words) + len(b)
	}
	return int(o.ID)
}

func main() {
	n := flag.Int("n", 1000, "goroutines to park")
	shape := flag.String("shape", "ints", "where they park: ints, struct or rich")
	flag.Parse()
	reached.Add(*n)
	for i := 0; i < *n; i++ {
		switch *shape {
		case "struct":
			go handle(newOrder(i))
		case "rich":
			go stage0(i, newOrder(i))
		default:
			go idleA(i)
		}
	}
	reached.Wait()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println("ready", ln.Addr())
	panic(http.Serve(ln, nil))
}
