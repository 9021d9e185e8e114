// Go peer for benches/compare: the same workloads as goro's compare_goro bench,
// run on Go's own runtime. Standard library only.
//
//	goropeer <spawn_idle|spawn_join|stack_grow|pingpong|ring|fanout|imbalance|chan_buffered|mutex|sleep> [--n N]
//	goropeer <http_hello|echo> --addr IP:PORT
//	goropeer <gc_latency [--secs S]|gc_trees|gc_parent_trees|gc_list|gc_graph>   (gc.go)
//
// Prints rows "workload go metric value unit" on stdout. http_hello and echo (net.go) are
// servers for benches/compare's http and idle_conns workloads: they print
// "listening on <addr>" and serve until killed; the script does the measuring.
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
//   - pingpong (N=1,000,000): the main goroutine and one other goroutine bounce an integer over
//     two unbuffered (rendezvous) chan int: main sends i on a, the peer receives it and sends it
//     back on b, main receives it; the values are summed and checked. round_trip = ns per round
//     trip. Closing a ends the peer.
//   - ring (N=1,000,000 hops): 1,000 goroutines in a ring of unbuffered chan int, goroutine i
//     receiving from chans[i] and sending to chans[(i+1)%1000]. Main injects the token N into
//     chans[0]; a goroutine that receives t>0 passes t-1 on, the one that receives 0 tells main
//     (unbuffered done channel) and then sends STOP(999) on; STOP(k) is encoded as -k. A
//     goroutine receiving STOP(k) passes STOP(k-1) on if k>1 and exits (STOP(1)'s receiver's
//     successor is the one that already left). per_hop = ns from the injection to main getting
//     done, divided by N. Main then waits for all 1,000 to have exited (outside the timing).
//   - fanout (N=1,000,000 goroutines): start N goroutines that each run 1,000 rounds of
//     x = x*6364136223846793005 + 1442695040888963407; x ^= x >> 33 (uint64, wrapping) from
//     x = their index and atomically add x to a shared sum; main waits on a sync.WaitGroup.
//     Wall time from the first go to Wait returning, first with runtime.GOMAXPROCS(1) (procs1),
//     then GOMAXPROCS(2) (procs2), in this process; speedup = procs1/procs2. The two sums must
//     match (the sum is also printed on stderr, to compare with the other implementations).
//   - imbalance (N=180,000,000 rounds): under runtime.GOMAXPROCS(2), start 3 goroutines that
//     each run N rounds of fanout's LCG from x = their index (0, 1, 2), with nothing in the
//     loop to yield: Go preempts a goroutine that has run 10 ms by signal. Each records when it
//     finished (time since the first go); main waits on a sync.WaitGroup. wall = ms from the
//     first go to Wait returning, first_done / last_done = the earliest / latest finish,
//     spread = last_done / first_done (Go rotates the three over both Ps: near 1). The sum of
//     the three results is printed on stderr (the same in every implementation).
//   - chan_buffered (N=1,000,000 values): one make(chan int, 1024), 4 producer goroutines and 4
//     consumer goroutines. Producer p sends the integers p*N/4 .. (p+1)*N/4-1 (so N values in
//     all, 0..N-1); consumers range over the channel until it is closed and drained, each
//     reporting its sum. Main waits for the producers (WaitGroup), closes the channel and adds
//     up the consumers' sums, which must equal N(N-1)/2. per_value = ns from the first go to
//     main having all sums, divided by N.
//   - mutex (N=1,000,000 locks): 8 goroutines share a sync.Mutex and a uint64 counter;
//     goroutine w does (w+1)*N/8 - w*N/8 iterations (N/8 each when 8 divides N) of lock,
//     counter++, unlock. Main waits on a WaitGroup; the count must equal N. per_lock = ns from
//     the first go to Wait returning, divided by N.
//   - sleep (N=1,000,000 goroutines): start N goroutines that each time.Sleep(10ms) and then
//     finish (WaitGroup). wall = ms from the first go to Wait returning. rss_per_goroutine =
//     current RSS read right after the spawn loop (before waiting) minus RSS before it, over N.
//     Spawning N takes longer than 10 ms, so by then some have already finished: how many is
//     printed on stderr (goropeer: sleep n=N spawn_ms S finished_at_sample F).
//     peak_rss_per_goroutine uses the peak RSS (VmHWM) instead, read after Wait.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// peakRssBytes is the process's peak resident set size so far (VmHWM), in bytes.
func peakRssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			v := strings.TrimPrefix(l, "VmHWM:")
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
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

func pingpong(n int) {
	a := make(chan int) // unbuffered: rendezvous
	b := make(chan int)
	go func() {
		for v := range a {
			b <- v
		}
	}()
	var sum uint64
	t0 := time.Now()
	for i := 0; i < n; i++ {
		a <- i
		sum += uint64(<-b)
	}
	el := time.Since(t0)
	close(a)
	if want := uint64(n) * (uint64(n) - 1) / 2; sum != want {
		fmt.Fprintf(os.Stderr, "pingpong: checksum %d, want %d\n", sum, want)
		os.Exit(1)
	}
	row("pingpong", "round_trip", float64(el.Nanoseconds())/float64(n), "ns")
}

const ringSize = 1000

func ring(n int) {
	// A token t >= 0 goes round; STOP(k), k >= 1, travels as -k.
	chans := make([]chan int, ringSize)
	for i := range chans {
		chans[i] = make(chan int) // unbuffered: rendezvous
	}
	done := make(chan struct{})
	var exited sync.WaitGroup
	exited.Add(ringSize)
	for i := 0; i < ringSize; i++ {
		in, out := chans[i], chans[(i+1)%ringSize]
		go func() {
			defer exited.Done()
			for {
				t := <-in
				switch {
				case t > 0:
					out <- t - 1
				case t == 0:
					done <- struct{}{}
					out <- -(ringSize - 1) // STOP(999)
					return
				default: // STOP(k)
					if k := -t; k > 1 {
						out <- -(k - 1)
					}
					return
				}
			}
		}()
	}
	t0 := time.Now()
	chans[0] <- n
	<-done
	el := time.Since(t0)
	exited.Wait()
	row("ring", "per_hop", float64(el.Nanoseconds())/float64(n), "ns")
}

func fanoutWork(seed uint64) uint64 {
	x := seed
	for r := 0; r < 1000; r++ {
		x = x*6364136223846793005 + 1442695040888963407
		x ^= x >> 33
	}
	return x
}

// fanoutOnce runs the fanout workload under GOMAXPROCS(procs): wall time and the sum.
func fanoutOnce(n, procs int) (time.Duration, uint64) {
	runtime.GOMAXPROCS(procs)
	runtime.GC() // start from a clean heap, outside the timing
	var sum uint64
	var wg sync.WaitGroup
	wg.Add(n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func(seed uint64) {
			atomic.AddUint64(&sum, fanoutWork(seed))
			wg.Done()
		}(uint64(i))
	}
	wg.Wait()
	return time.Since(t0), atomic.LoadUint64(&sum)
}

func fanout(n int) {
	d1, s1 := fanoutOnce(n, 1)
	d2, s2 := fanoutOnce(n, 2)
	fmt.Fprintf(os.Stderr, "goropeer: fanout n=%d checksum %d\n", n, s1)
	if s1 != s2 {
		fmt.Fprintf(os.Stderr, "fanout: checksum %d with 1 proc, %d with 2\n", s1, s2)
		os.Exit(1)
	}
	row("fanout", "procs1", ms(d1), "ms")
	row("fanout", "procs2", ms(d2), "ms")
	fmt.Printf("fanout go speedup %.2f x\n", float64(d1)/float64(d2))
}

// lcgLong is one imbalance goroutine's work: n rounds of fanoutWork's LCG from seed. The other
// implementations put a preemption point (or yield) after every 1,000 rounds; Go needs none,
// so the rounds are counted off in the same chunks but nothing is called between them.
func lcgLong(seed uint64, n int) uint64 {
	x := seed
	for left := n; left > 0; {
		k := left
		if k > 1000 {
			k = 1000
		}
		for j := 0; j < k; j++ {
			x = x*6364136223846793005 + 1442695040888963407
			x ^= x >> 33
		}
		left -= k
	}
	return x
}

func imbalance(n int) {
	const tasks = 3
	runtime.GOMAXPROCS(2)
	runtime.GC() // start from a clean heap, outside the timing
	var results [tasks]uint64
	var done [tasks]time.Duration
	var wg sync.WaitGroup
	wg.Add(tasks)
	t0 := time.Now()
	for i := 0; i < tasks; i++ {
		go func(i int) {
			results[i] = lcgLong(uint64(i), n)
			done[i] = time.Since(t0)
			wg.Done()
		}(i)
	}
	wg.Wait()
	wall := time.Since(t0)
	var sum uint64
	first, last := done[0], done[0]
	for i := 0; i < tasks; i++ {
		sum += results[i]
		if done[i] < first {
			first = done[i]
		}
		if done[i] > last {
			last = done[i]
		}
	}
	fmt.Fprintf(os.Stderr, "goropeer: imbalance n=%d procs=%d checksum %d done_ms %.1f,%.1f,%.1f\n",
		n, runtime.GOMAXPROCS(0), sum, ms(done[0]), ms(done[1]), ms(done[2]))
	row("imbalance", "wall", ms(wall), "ms")
	row("imbalance", "first_done", ms(first), "ms")
	row("imbalance", "last_done", ms(last), "ms")
	fmt.Printf("imbalance go spread %.2f x\n", float64(last)/float64(first))
}

func chanBuffered(n int) {
	const producers, consumers, capacity = 4, 4, 1024
	ch := make(chan int, capacity)
	sums := make(chan uint64, consumers)
	var sent sync.WaitGroup
	sent.Add(producers)
	t0 := time.Now()
	for c := 0; c < consumers; c++ {
		go func() {
			var s uint64
			for v := range ch {
				s += uint64(v)
			}
			sums <- s
		}()
	}
	for p := 0; p < producers; p++ {
		lo, hi := p*n/producers, (p+1)*n/producers
		go func() {
			for i := lo; i < hi; i++ {
				ch <- i
			}
			sent.Done()
		}()
	}
	sent.Wait()
	close(ch)
	var sum uint64
	for c := 0; c < consumers; c++ {
		sum += <-sums
	}
	el := time.Since(t0)
	if want := uint64(n) * (uint64(n) - 1) / 2; sum != want {
		fmt.Fprintf(os.Stderr, "chan_buffered: checksum %d, want %d\n", sum, want)
		os.Exit(1)
	}
	row("chan_buffered", "per_value", float64(el.Nanoseconds())/float64(n), "ns")
}

func mutexContend(n int) {
	const workers = 8
	var mu sync.Mutex
	var count uint64
	var wg sync.WaitGroup
	wg.Add(workers)
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		iters := (w+1)*n/workers - w*n/workers
		go func() {
			for i := 0; i < iters; i++ {
				mu.Lock()
				count++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	if count != uint64(n) {
		fmt.Fprintf(os.Stderr, "mutex: count %d, want %d\n", count, n)
		os.Exit(1)
	}
	row("mutex", "per_lock", float64(el.Nanoseconds())/float64(n), "ns")
}

func sleepMany(n int) {
	var wg sync.WaitGroup
	wg.Add(n)
	var finished int64
	rss0 := rssBytes()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			time.Sleep(10 * time.Millisecond)
			atomic.AddInt64(&finished, 1)
			wg.Done()
		}()
	}
	spawn := time.Since(t0)
	rss := rssBytes()
	fin := atomic.LoadInt64(&finished)
	wg.Wait()
	el := time.Since(t0)
	fmt.Fprintf(os.Stderr, "goropeer: sleep n=%d spawn_ms %.1f finished_at_sample %d\n", n, ms(spawn), fin)
	row("sleep", "wall", ms(el), "ms")
	row("sleep", "rss_per_goroutine", float64((rss-rss0)/int64(n)), "B")
	row("sleep", "peak_rss_per_goroutine", float64((peakRssBytes()-rss0)/int64(n)), "B")
}

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: goropeer <spawn_idle|spawn_join|stack_grow|pingpong|ring|fanout|imbalance|chan_buffered|mutex|sleep> [--n N]\n       goropeer <http_hello|echo> --addr IP:PORT [--buf BYTES]")
		os.Exit(2)
	}
	n := -1
	addr := ""
	bufSize := 4096
	secs := 5.0
	for i := 1; i < len(args); i++ {
		if args[i] == "--addr" && i+1 < len(args) {
			addr = args[i+1]
		}
		if args[i] == "--buf" && i+1 < len(args) {
			v, err := strconv.Atoi(args[i+1])
			if err != nil || v <= 0 {
				fmt.Fprintln(os.Stderr, "--buf takes a positive number of bytes")
				os.Exit(2)
			}
			bufSize = v
		}
		if args[i] == "--secs" && i+1 < len(args) { // gc_latency (gc.go)
			v, err := strconv.ParseFloat(args[i+1], 64)
			if err != nil || v <= 0 {
				fmt.Fprintln(os.Stderr, "--secs takes a positive number of seconds")
				os.Exit(2)
			}
			secs = v
		}
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
	case "pingpong":
		pingpong(orDefault(1_000_000))
	case "ring":
		ring(orDefault(1_000_000))
	case "fanout":
		fanout(orDefault(1_000_000))
	case "imbalance":
		imbalance(orDefault(180_000_000))
	case "chan_buffered":
		chanBuffered(orDefault(1_000_000))
	case "mutex":
		mutexContend(orDefault(1_000_000))
	case "sleep":
		sleepMany(orDefault(1_000_000))
	case "gc_latency":
		gcLatency(secs)
	case "gc_trees":
		gcTrees()
	case "gc_parent_trees":
		gcParentTrees()
	case "gc_list":
		gcList()
	case "gc_graph":
		gcGraph()
	case "http_hello", "echo":
		if addr == "" {
			fmt.Fprintf(os.Stderr, "%s needs --addr IP:PORT\n", args[0])
			os.Exit(2)
		}
		if args[0] == "echo" {
			echo(addr, bufSize)
		} else {
			httpHello(addr)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown workload %q (spawn_idle, spawn_join, stack_grow, pingpong, ring, fanout, imbalance, chan_buffered, mutex, sleep, http_hello, echo, gc_latency, gc_trees, gc_parent_trees, gc_list, gc_graph)\n", args[0])
		os.Exit(2)
	}
}
