// Command demo is goprobe's demo target: a small line-protocol service on loopback
// with a worker pool, a mutex-guarded cache, two Handler implementations, a ticker,
// goroutines waiting for shutdown, and a built-in load generator that calls the
// service every ~50 ms. A snapshot of it shows goroutines in varied states and
// structs with maps, slices, interfaces and pointers worth looking at.
//
// Protocol, one line each way:  "<id> <path> <k=v,k=v|-> <body>\n"  →  "<id> <status> <body>\n"
//
// Usage: demo [-duration 30s] [-workers 8]   (runs until SIGINT/SIGTERM by default)
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type Config struct {
	Timeout time.Duration
	Name    string
}

type Stats struct {
	mu       sync.Mutex
	Requests int64
	Errors   int64
	ByPath   map[string]int64
	Ticks    int64
	Started  time.Time
}

// Conn is one accepted client connection.
type Conn struct {
	ID     int
	Remote string
	Served int
	conn   net.Conn
}

type Request struct {
	ID      int64
	Path    string
	Headers map[string]string
	Body    []byte
}

type Response struct {
	Status int
	Body   []byte
}

// Handler serves the requests whose path it matches.
type Handler interface {
	Match(path string) bool
	Serve(req *Request) Response
}

// EchoHandler answers with the body, optionally upper-cased or delayed ("delay" header).
type EchoHandler struct {
	Prefix string
	Upper  bool
}

func (h *EchoHandler) Match(path string) bool { return strings.HasPrefix(path, h.Prefix) }

func (h *EchoHandler) Serve(req *Request) Response {
	if d, err := time.ParseDuration(req.Headers["delay"]); err == nil {
		time.Sleep(d) // keeps a worker in a sleep state now and then
	}
	body := req.Body
	if h.Upper {
		body = []byte(strings.ToUpper(string(body)))
	}
	return Response{Status: 200, Body: body}
}

type Entry struct {
	Key     string
	Value   []byte
	Created time.Time
	Hits    int
}

// CacheHandler stores bodies under /cache/<key> and returns them on empty requests.
type CacheHandler struct {
	mu      sync.Mutex
	entries map[string]*Entry
	Hits    int
	Misses  int
}

func (c *CacheHandler) Match(path string) bool { return strings.HasPrefix(path, "/cache/") }

func (c *CacheHandler) Serve(req *Request) Response {
	key := strings.TrimPrefix(req.Path, "/cache/")
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(req.Body) > 0 {
		c.entries[key] = &Entry{Key: key, Value: req.Body, Created: time.Now()}
		return Response{Status: 201}
	}
	e, ok := c.entries[key]
	if !ok {
		c.Misses++
		return Response{Status: 404, Body: []byte("miss")}
	}
	c.Hits++
	e.Hits++
	return Response{Status: 200, Body: e.Value}
}

// Job is one request handed to the worker pool, with where to send the answer.
type Job struct {
	Req   *Request
	Reply chan Response
}

type Worker struct {
	ID      int
	Done    int
	Current *Request // the request being served, nil while waiting for work
	srv     *Server
}

type Server struct {
	cfg      Config
	ln       net.Listener
	mu       sync.Mutex // guards conns and nextConn
	conns    map[int]*Conn
	nextConn int
	handlers []Handler
	cache    *CacheHandler
	stats    *Stats
	jobs     chan Job
	quit     chan struct{}
}

func newServer(cfg Config, ln net.Listener) *Server {
	cache := &CacheHandler{entries: map[string]*Entry{}}
	return &Server{
		cfg:      cfg,
		ln:       ln,
		conns:    map[int]*Conn{},
		handlers: []Handler{&EchoHandler{Prefix: "/echo"}, &EchoHandler{Prefix: "/shout", Upper: true}, cache},
		cache:    cache,
		stats:    &Stats{ByPath: map[string]int64{}, Started: time.Now()},
		jobs:     make(chan Job, 16),
		quit:     make(chan struct{}),
	}
}

// serve accepts connections until the listener is closed.
func (s *Server) serve() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.nextConn++
		c := &Conn{ID: s.nextConn, Remote: nc.RemoteAddr().String(), conn: nc}
		s.conns[c.ID] = c
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *Server) serveConn(c *Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c.ID)
		s.mu.Unlock()
		c.conn.Close()
	}()
	r := bufio.NewReader(c.conn)
	for {
		line, err := r.ReadString('\n') // idle connections wait here, in the netpoller
		if err != nil {
			return
		}
		req, err := parseRequest(line)
		resp := Response{Status: 400, Body: []byte(fmt.Sprint(err))}
		if err == nil {
			resp = s.handle(req)
		}
		c.Served++
		fmt.Fprintf(c.conn, "%d %d %s\n", req.ID, resp.Status, resp.Body)
	}
}

func parseRequest(line string) (*Request, error) {
	f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 4)
	if len(f) != 4 {
		return &Request{}, fmt.Errorf("want 4 fields, got %d", len(f))
	}
	id, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return &Request{}, err
	}
	req := &Request{ID: id, Path: f[1], Headers: map[string]string{}, Body: []byte(f[3])}
	if f[2] != "-" {
		for _, kv := range strings.Split(f[2], ",") {
			k, v, _ := strings.Cut(kv, "=")
			req.Headers[k] = v
		}
	}
	return req, nil
}

// handle queues req for the worker pool and waits for the answer or the timeout.
func (s *Server) handle(req *Request) Response {
	s.count(func(st *Stats) { st.Requests++; st.ByPath[req.Path]++ })
	job := Job{Req: req, Reply: make(chan Response, 1)}
	s.jobs <- job
	select {
	case resp := <-job.Reply:
		return resp
	case <-time.After(s.cfg.Timeout):
		s.count(func(st *Stats) { st.Errors++ })
		return Response{Status: 504, Body: []byte("timeout")}
	}
}

// count updates the stats under their lock.
func (s *Server) count(update func(*Stats)) {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	update(s.stats)
}

func (s *Server) route(path string) Handler {
	for _, h := range s.handlers {
		if h.Match(path) {
			return h
		}
	}
	return nil
}

// run serves jobs until the channel is closed; idle workers block receiving.
func (w *Worker) run(jobs <-chan Job) {
	for job := range jobs {
		w.Current = job.Req
		resp := Response{Status: 404, Body: []byte("no handler")}
		if h := w.srv.route(job.Req.Path); h != nil {
			resp = h.Serve(job.Req)
		}
		job.Reply <- resp
		w.Done++
		w.Current = nil
	}
}

// tick counts seconds and drops cache entries older than 10 s.
func (s *Server) tick() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.quit:
			return
		}
		s.count(func(st *Stats) { st.Ticks++ })
		s.cache.mu.Lock()
		for k, e := range s.cache.entries {
			if time.Since(e.Created) > 10*time.Second {
				delete(s.cache.entries, k)
			}
		}
		s.cache.mu.Unlock()
	}
}

// waitForShutdown is a goroutine with nothing to do until the server stops.
// Its parameters are used after the wait so a snapshot can still read them.
func waitForShutdown(id int, role string, quit <-chan struct{}) (done string) {
	<-quit
	return fmt.Sprintf("%s-%d stopped", role, id)
}

// loadgen calls the service at addr every ~50 ms over one connection.
func loadgen(addr string, quit <-chan struct{}) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return
	}
	defer c.Close()
	r := bufio.NewReader(c)
	paths := []string{"/echo/hello", "/cache/user:1", "/shout/hi", "/cache/user:2", "/missing"}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for id := int64(1); ; id++ {
		select {
		case <-t.C:
		case <-quit:
			return
		}
		path, headers, body := paths[id%int64(len(paths))], "-", fmt.Sprintf("payload %d", id)
		if id%10 == 0 {
			headers = "delay=300ms,trace=on"
		}
		if strings.HasPrefix(path, "/cache/") && id%3 != 0 {
			body = "" // mostly reads
		}
		fmt.Fprintf(c, "%d %s %s %s\n", id, path, headers, body)
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
	}
}

// idleClient opens a connection, makes one request and then keeps it open, idle.
func idleClient(addr string, n int, quit <-chan struct{}) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	fmt.Fprintf(c, "%d /cache/idle:%d - client %d\n", 1000+n, n, n)
	_, _ = bufio.NewReader(c).ReadString('\n')
	<-quit
}

func main() {
	duration := flag.Duration("duration", 0, "stop after this long (0: run until SIGINT/SIGTERM)")
	workers := flag.Int("workers", 8, "worker pool size")
	flag.Parse()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	s := newServer(Config{Timeout: 2 * time.Second, Name: "demo"}, ln)
	addr := ln.Addr().String()
	fmt.Println("listening", addr)

	for i := 1; i <= *workers; i++ {
		w := &Worker{ID: i, srv: s}
		go w.run(s.jobs)
	}
	go s.serve()
	go s.tick()
	for i, role := range []string{"flusher", "reaper", "notifier", "auditor", "metrics", "janitor"} {
		go waitForShutdown(i, role, s.quit)
	}
	go loadgen(addr, s.quit)
	for i := 0; i < 3; i++ {
		go idleClient(addr, i, s.quit)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	var timeout <-chan time.Time
	if *duration > 0 {
		timeout = time.After(*duration)
	}
	select {
	case <-sig:
	case <-timeout:
	}
	close(s.quit)
	ln.Close()
}
