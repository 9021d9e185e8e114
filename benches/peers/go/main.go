// Go peer for benches/compare: the same workloads as goro's compare_goro bench,
// run on Go's own runtime. Standard library only.
//
//	goropeer <spawn_idle|spawn_join|stack_grow> [--n N]
//
// Prints rows "workload go metric value unit" on stdout.
//
//   - spawn_idle (N=1,000,000): start N goroutines that each block receiving from their own
//     chan struct{}; time until all N have reached the receive (spawn_all_parked), RSS added
//     per goroutine (rss_per_goroutine), then time to close every channel and see all exit
//     (release_all).
//   - spawn_join (N=1,000,000): from the main goroutine, N times in a row start a goroutine
//     that sends i on one reused unbuffered channel and receive it (per_op = ns per go+receive).
//   - stack_grow (N=200): recursion 8,192 frames deep with a 64-byte local array per frame
//     (~1 MiB of stack). fresh: a new goroutine per iteration (its stack starts small and grows
//     by copying), us per spawn+recurse+exit; warm: one goroutine whose stack already grew,
//     us per recursion.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func row(workload, metric string, value float64, unit string) {
	fmt.Printf("%s go %s %.1f %s\n", workload, metric, value, unit)
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func spawnIdle(n int) {
	var parked, exited sync.WaitGroup
	parked.Add(n)
	exited.Add(n)
	chans := make([]chan struct{}, n)
	rss0 := rssBytes()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		ch := make(chan struct{})
		chans[i] = ch
		go func() {
			parked.Done() // about to block
			<-ch
			exited.Done()
		}()
	}
	parked.Wait()
	spawn := time.Since(t0)
	// Done() comes just before the receive: give the last ones a moment to actually block.
	runtime.Gosched()
	per := (rssBytes() - rss0) / int64(n)
	t1 := time.Now()
	for _, ch := range chans {
		close(ch)
	}
	exited.Wait()
	release := time.Since(t1)
	row("spawn_idle", "spawn_all_parked", ms(spawn), "ms")
	row("spawn_idle", "rss_per_goroutine", float64(per), "B")
	row("spawn_idle", "release_all", ms(release), "ms")
}

func spawnJoin(n int) {
	ch := make(chan uint64)
	var sum uint64
	t0 := time.Now()
	for i := uint64(0); i < uint64(n); i++ {
		go func(i uint64) { ch <- i }(i)
		sum += <-ch
	}
	el := time.Since(t0)
	if want := uint64(n) * (uint64(n) - 1) / 2; sum != want {
		fmt.Fprintf(os.Stderr, "spawn_join: checksum %d, want %d\n", sum, want)
		os.Exit(1)
	}
	row("spawn_join", "per_op", float64(el.Nanoseconds())/float64(n), "ns")
}

const depth = 8192

// recurse keeps a 64-byte array in every frame across the recursive call.
//
//go:noinline
func recurse(d int) int {
	var buf [64]byte // zeroed in the frame; a variable index keeps it in memory
	buf[d&63] = byte(d)
	r := 0
	if d > 0 {
		r = recurse(d - 1)
	}
	return r + int(buf[d&63])
}

var sink int

func stackGrow(n int) {
	done := make(chan int)
	var total time.Duration
	for i := 0; i < n; i++ {
		t := time.Now()
		go func() { done <- recurse(depth) }()
		sink += <-done
		total += time.Since(t)
	}
	fresh := float64(total.Nanoseconds()) / 1e3 / float64(n)

	go func() {
		sink += recurse(depth) // grow the stack once
		t := time.Now()
		s := 0
		for i := 0; i < n; i++ {
			s += recurse(depth)
		}
		el := time.Since(t)
		sink += s
		done <- int(el.Nanoseconds())
	}()
	warm := float64(<-done) / 1e3 / float64(n)
	row("stack_grow", "fresh", fresh, "us")
	row("stack_grow", "warm", warm, "us")
}

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: goropeer <spawn_idle|spawn_join|stack_grow> [--n N]")
		os.Exit(2)
	}
	n := -1
	for i := 1; i < len(args); i++ {
		if args[i] == "--n" && i+1 < len(args) {
			v, err := strconv.Atoi(strings.ReplaceAll(args[i+1], "_", ""))
			if err != nil || v <= 0 {
				fmt.Fprintln(os.Stderr, "--n takes a positive number")
				os.Exit(2)
			}
			n = v
		}
	}
	orDefault := func(d int) int {
		if n > 0 {
			return n
		}
		return d
	}
	switch args[0] {
	case "spawn_idle":
		spawnIdle(orDefault(1_000_000))
	case "spawn_join":
		spawnJoin(orDefault(1_000_000))
	case "stack_grow":
		stackGrow(orDefault(200))
	default:
		fmt.Fprintf(os.Stderr, "unknown workload %q (spawn_idle, spawn_join, stack_grow)\n", args[0])
		os.Exit(2)
	}
}
