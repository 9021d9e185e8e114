// gc.go: the Go peer's garbage-collector workloads (goro issue's GC benchmarks 1 and 4), run on
// Go's own collector. Owns gc_latency, gc_trees, gc_parent_trees, gc_list and gc_graph; main.go
// only dispatches to them. Standard library only. The same shapes (except gc_latency) are in
// benches/peers/rustgc for the Rust GC crates.
//
//		goropeer gc_latency [--secs S]          (S default 5)
//		goropeer <gc_trees|gc_parent_trees|gc_list|gc_graph>
//
//	  - gc_latency: under runtime.GOMAXPROCS(2) and the default GOGC, build a live binary tree of
//	    2^20-1 nodes (two child pointers and an int: 24 bytes each), then for S seconds 2
//	    goroutines allocate: each step builds a 4-object linked list of 48-byte objects whose
//	    head also holds a fresh 128-byte slice, stored in a per-goroutine ring of the last 256
//	    lists; a third goroutine sleeps 1 ms in a loop and records how late each wake is
//	    (elapsed - 1 ms). Rows: pause_p99 / pause_max (us, from MemStats.PauseNs of the cycles
//	    that ran during the S seconds; only the last 256 are kept by the runtime, a warning goes to
//	    stderr if more ran), gc_cpu_fraction (MemStats.GCCPUFraction at the end), peak_rss (VmHWM,
//	    MiB), lists_per_s (lists built by both goroutines / elapsed), sleeper_late_p99 /
//	    sleeper_late_max (ms). The number of cycles goes to stderr.
//	  - gc_trees: the benchmarks-game binary-trees shape at max depth 11 (min depth 4): a stretch
//	    tree of depth 12 built, walked, dropped; a long-lived tree of depth 11; then for depth
//	    d = 4, 6, 8, 10, 2^(11-d+4) trees of depth d each built, walked (node count, checked) and
//	    dropped; then the long-lived tree is walked and dropped. Each node: two child pointers and
//	    an int.
//	  - gc_parent_trees: the same, with every node also pointing back at its parent (cycles).
//	  - gc_list: 30 doubly linked lists (next/prev pointers and an int) of 4,096 nodes each are
//	    built and kept, each walked forward, then all dropped.
//	  - gc_graph: 2^15 nodes (an id and a slice of edges), 2^15 edges from a deterministic LCG
//	    (x = x*6364136223846793005 + 1442695040888963407, from = x>>33 mod n, then to likewise),
//	    so node->node references form cycles; then a DFS from node 0 over every node not yet
//	    visited counts nodes and edges (checked), then everything is dropped.
//
// The four GC-crate workloads each end their iteration with runtime.GC(), inside the timing, so
// the garbage is reclaimed within the measurement. One warm-up iteration sets the count
// (about 1.5 s worth, at least 3, at most 101); per_iter is the median of those, in ms.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"time"
)

func gcRow(workload, metric string, value float64, unit string, prec int) {
	fmt.Printf("%s go %s %.*f %s\n", workload, metric, prec, value, unit)
}

// ---- gc_latency ----

type latNode struct {
	left, right *latNode
	v           int
}

func latTree(d int) *latNode {
	if d == 0 {
		return nil
	}
	return &latNode{latTree(d - 1), latTree(d - 1), d}
}

func latCount(t *latNode) int {
	if t == nil {
		return 0
	}
	return 1 + latCount(t.left) + latCount(t.right)
}

// latObj is 48 bytes: 8 (next) + 24 (slice header) + 16.
type latObj struct {
	next *latObj
	buf  []byte
	a, b int
}

var latSink *latNode

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(p*float64(len(s))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		if x > m {
			m = x
		}
	}
	return m
}

func gcLatency(secs float64) {
	runtime.GOMAXPROCS(2)
	tree := latTree(20) // 2^20-1 nodes
	latSink = tree
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	dur := time.Duration(secs * float64(time.Second))
	t0 := time.Now()
	deadline := t0.Add(dur)
	counts := make(chan int64, 2)
	for g := 0; g < 2; g++ {
		go func(g int) {
			var ring [256]*latObj
			var n int64
			for time.Now().Before(deadline) {
				for k := 0; k < 256; k++ { // check the clock every 256 lists
					var head *latObj
					for j := 0; j < 4; j++ {
						head = &latObj{next: head, a: j, b: g}
					}
					head.buf = make([]byte, 128)
					ring[int(n)&255] = head
					n++
				}
			}
			if ring[0] == nil {
				n = -1
			}
			counts <- n
		}(g)
	}
	lates := make(chan []float64)
	go func() {
		var l []float64
		for time.Now().Before(deadline) {
			t := time.Now()
			time.Sleep(time.Millisecond)
			l = append(l, float64(time.Since(t)-time.Millisecond)/1e6)
		}
		lates <- l
	}()
	total := <-counts + <-counts
	late := <-lates
	el := time.Since(t0)
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	if latCount(tree) != 1<<20-1 {
		fmt.Fprintln(os.Stderr, "gc_latency: tree lost nodes")
		os.Exit(1)
	}
	cycles := int(ms1.NumGC - ms0.NumGC)
	first := int(ms0.NumGC) + 1
	if cycles > 256 {
		fmt.Fprintf(os.Stderr, "goropeer: gc_latency: %d cycles ran, only the last 256 pauses are known\n", cycles)
		first = int(ms1.NumGC) - 255
	}
	var pauses []float64
	for i := first; i <= int(ms1.NumGC); i++ {
		pauses = append(pauses, float64(ms1.PauseNs[(i+255)%256])/1e3)
	}
	fmt.Fprintf(os.Stderr, "goropeer: gc_latency cycles %d sleeps %d elapsed_s %.2f\n", cycles, len(late), el.Seconds())
	gcRow("gc_latency", "pause_p99", percentile(pauses, 0.99), "us", 1)
	gcRow("gc_latency", "pause_max", maxOf(pauses), "us", 1)
	gcRow("gc_latency", "gc_cpu_fraction", ms1.GCCPUFraction, "x", 3)
	gcRow("gc_latency", "peak_rss", float64(peakRssBytes())/(1<<20), "MB", 1)
	gcRow("gc_latency", "lists_per_s", float64(total)/el.Seconds(), "lists/s", 0)
	gcRow("gc_latency", "sleeper_late_p99", percentile(late, 0.99), "ms", 2)
	gcRow("gc_latency", "sleeper_late_max", maxOf(late), "ms", 2)
}

// ---- the GC-crate workloads ----

// timeIters runs one warm-up iteration, then enough more for ~1.5 s (3..101), and prints the
// median per-iteration time.
func timeIters(workload string, f func()) {
	t := time.Now()
	f()
	warm := time.Since(t)
	n := int(1.5e9 / float64(warm.Nanoseconds()+1))
	if n < 3 {
		n = 3
	}
	if n > 101 {
		n = 101
	}
	ts := make([]float64, n)
	for i := range ts {
		t := time.Now()
		f()
		ts[i] = ms(time.Since(t))
	}
	sort.Float64s(ts)
	fmt.Fprintf(os.Stderr, "goropeer: %s iterations %d min %.2f max %.2f ms\n", workload, n, ts[0], ts[n-1])
	gcRow(workload, "per_iter", ts[n/2], "ms", 2)
}

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

type treeNode struct {
	left, right *treeNode
	v           int
}

func bottomUp(d int) *treeNode {
	if d == 0 {
		return &treeNode{v: 0}
	}
	return &treeNode{bottomUp(d - 1), bottomUp(d - 1), d}
}

func (t *treeNode) check() int {
	if t.left == nil {
		return 1
	}
	return 1 + t.left.check() + t.right.check()
}

type ptreeNode struct {
	parent, left, right *ptreeNode
	v                   int
}

func bottomUpP(d int) *ptreeNode {
	if d == 0 {
		return &ptreeNode{v: 0}
	}
	n := &ptreeNode{left: bottomUpP(d - 1), right: bottomUpP(d - 1), v: d}
	n.left.parent = n
	n.right.parent = n
	return n
}

func (t *ptreeNode) check() int {
	if t.left == nil {
		return 1
	}
	if t.left.parent != t || t.right.parent != t {
		die("gc_parent_trees: bad parent link")
	}
	return 1 + t.left.check() + t.right.check()
}

const minDepth, maxDepth = 4, 11

func nodes(d int) int { return 1<<(d+1) - 1 } // a tree of depth d (d+1 levels)

// binaryTrees runs one benchmarks-game iteration with build/check given.
func binaryTrees(name string, build func(int) func() int) {
	if build(maxDepth+1)() != nodes(maxDepth+1) {
		die("%s: stretch tree", name)
	}
	long := build(maxDepth)
	for d := minDepth; d <= maxDepth; d += 2 {
		iters := 1 << (maxDepth - d + minDepth)
		c := 0
		for i := 0; i < iters; i++ {
			c += build(d)()
		}
		if c != iters*nodes(d) {
			die("%s: depth %d check %d", name, d, c)
		}
	}
	if long() != nodes(maxDepth) {
		die("%s: long-lived tree", name)
	}
}

func gcTrees() {
	timeIters("gc_trees", func() {
		binaryTrees("gc_trees", func(d int) func() int { t := bottomUp(d); return t.check })
		runtime.GC()
	})
}

func gcParentTrees() {
	timeIters("gc_parent_trees", func() {
		binaryTrees("gc_parent_trees", func(d int) func() int { t := bottomUpP(d); return t.check })
		runtime.GC()
	})
}

type listNode struct {
	next, prev *listNode
	v          int
}

const nLists, listLen = 30, 4096

func gcList() {
	timeIters("gc_list", func() {
		heads := make([]*listNode, nLists)
		for l := range heads {
			head := &listNode{v: 0}
			tail := head
			for i := 1; i < listLen; i++ {
				n := &listNode{prev: tail, v: i}
				tail.next = n
				tail = n
			}
			heads[l] = head
		}
		for _, h := range heads {
			s, c := 0, 0
			for n := h; n != nil; n = n.next {
				if n.next != nil && n.next.prev != n {
					die("gc_list: bad prev link")
				}
				s += n.v
				c++
			}
			if c != listLen || s != listLen*(listLen-1)/2 {
				die("gc_list: count %d sum %d", c, s)
			}
		}
		heads = nil
		runtime.GC()
	})
}

type graphNode struct {
	id    int
	edges []*graphNode
}

const graphNodes, graphEdges = 1 << 15, 1 << 15

func lcg(x uint64) uint64 { return x*6364136223846793005 + 1442695040888963407 }

func gcGraph() {
	timeIters("gc_graph", func() {
		ns := make([]*graphNode, graphNodes)
		for i := range ns {
			ns[i] = &graphNode{id: i}
		}
		x := uint64(1)
		for e := 0; e < graphEdges; e++ {
			x = lcg(x)
			from := (x >> 33) % graphNodes
			x = lcg(x)
			to := (x >> 33) % graphNodes
			ns[from].edges = append(ns[from].edges, ns[to])
		}
		visited := make([]bool, graphNodes)
		seen, edges := 0, 0
		var stack []*graphNode
		for _, root := range ns {
			if visited[root.id] {
				continue
			}
			visited[root.id] = true
			stack = append(stack[:0], root)
			for len(stack) > 0 {
				n := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				seen++
				for _, m := range n.edges {
					edges++
					if !visited[m.id] {
						visited[m.id] = true
						stack = append(stack, m)
					}
				}
			}
		}
		if seen != graphNodes || edges != graphEdges {
			die("gc_graph: seen %d edges %d", seen, edges)
		}
		ns, stack = nil, nil
		runtime.GC()
	})
}
