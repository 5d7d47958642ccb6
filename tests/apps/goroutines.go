// Goroutines as the Go runtime schedules them on OS threads: channels, WaitGroup,
// Mutex, timers and sleeps, a CPU-parallel computation, and a goroutine in a tight
// loop that the runtime must preempt. Run natively and under nacre, each mode must
// print the same.
//
// Build: CGO_ENABLED=0 go build -o goroutines goroutines.go
// Usage: goroutines MODE, MODE one of hello, channels, sleep, parallel, spin.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

func channels() {
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	results := make(chan int, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			mu.Lock()
			total += i
			mu.Unlock()
			results <- i * i
		}(i)
	}
	wg.Wait()
	close(results)
	squares := 0
	for r := range results {
		squares += r
	}
	// An unbuffered ping-pong between two goroutines.
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
		close(pong)
	}()
	v := 0
	for i := 0; i < 1000; i++ {
		ping <- v
		v = <-pong
	}
	close(ping)
	fmt.Println("total", total, "squares", squares, "ping-pong", v)
}

func sleep() {
	start := time.Now()
	time.Sleep(20 * time.Millisecond)
	fmt.Println("slept at least 20ms:", time.Since(start) >= 20*time.Millisecond)
	timer := time.NewTimer(10 * time.Millisecond)
	<-timer.C
	fmt.Println("timer fired")
	ticker := time.NewTicker(5 * time.Millisecond)
	for i := 0; i < 3; i++ {
		<-ticker.C
	}
	ticker.Stop()
	fmt.Println("ticker ticked 3 times")
	select {
	case <-time.After(15 * time.Millisecond):
		fmt.Println("time.After fired")
	case <-make(chan int):
	}
}

func parallel() {
	procs := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	results := make([]int, 8)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = fib(27)
		}(i)
	}
	wg.Wait()
	fmt.Println("parallel on", procs > 0, "procs:", results[0], results[7])
}

func spin() {
	stop := make(chan struct{})
	var spins [2]int
	for i := range spins {
		go func(i int) {
			for {
				spins[i]++
			}
		}(i)
	}
	go func() {
		time.Sleep(30 * time.Millisecond)
		close(stop)
	}()
	<-stop
	fmt.Println("the tight loops were preempted")
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: goroutines hello|channels|sleep|parallel|spin")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "hello":
		fmt.Println("hello from Go")
	case "channels":
		channels()
	case "sleep":
		sleep()
	case "parallel":
		parallel()
	case "spin":
		spin()
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
