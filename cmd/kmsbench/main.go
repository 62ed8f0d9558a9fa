// Command kmsbench measures kmsd against a ceiling server on the same machine in one
// run: it starts both, loads each with wrk using the same settings and correctly signed
// requests, checks every response, and prints requests per second, p50, p99 and p99.9
// latency, and each kmsd figure as a ratio to the ceiling.
//
//	kmsbench --kmsd bin/kmsd [--duration 15s] [--connections 64] [--threads 2]
//
// scripts/bench.sh builds the binaries and runs it. It exits 1 when any response was
// wrong (a non-2xx status or a wrong data key), so a fast but broken build cannot pass.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"time"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "ceiling" {
		fs := flag.NewFlagSet("ceiling", flag.ExitOnError)
		listen := fs.String("listen", "127.0.0.1:0", "address to serve on")
		_ = fs.Parse(os.Args[2:])
		if err := runCeiling(*listen); err != nil {
			fmt.Fprintln(os.Stderr, "kmsbench ceiling:", err)
			os.Exit(1)
		}
		return
	}

	fs := flag.NewFlagSet("kmsbench", flag.ExitOnError)
	opts := options{}
	fs.StringVar(&opts.kmsd, "kmsd", "bin/kmsd", "path of the kmsd binary to measure")
	fs.DurationVar(&opts.duration, "duration", 15*time.Second,
		"load time of each server per operation and connection count, split over the rounds")
	fs.IntVar(&opts.rounds, "rounds", 3,
		"wrk runs per server that alternate between the ceiling and kmsd, each of duration/rounds in whole seconds")
	fs.IntVar(&opts.connections, "connections", 64, "wrk connections of the loaded runs")
	fs.IntVar(&opts.threads, "threads", 2, "wrk threads of the loaded runs")
	fs.BoolVar(&opts.skipSingle, "skip-single", false, "skip the 1-connection runs")
	fs.BoolVar(&opts.skipCeiling, "skip-ceiling", false, "load only kmsd (for soak runs; no ratios)")
	fs.StringVar(&opts.ops, "ops", "decrypt-datakey,create-datakey,encrypt-datakey,encrypt-data",
		"comma-separated operations to measure")
	fs.StringVar(&opts.kmsdArgs, "kmsd-args", "", "extra kmsd flags, space-separated")
	fs.StringVar(&opts.kmsdEnv, "kmsd-env", "",
		"extra environment variables of kmsd only, NAME=value space-separated (GOMAXPROCS=1)")
	fs.StringVar(&opts.against, "against", "",
		"path of another kmsd build that takes the ceiling's place, to compare two builds with alternating rounds")
	fs.StringVar(&opts.againstEnv, "against-env", "",
		"extra environment variables of the --against kmsd only, NAME=value space-separated")
	fs.StringVar(&opts.database, "database", "", "kmsd --database (default: SQLite in the data directory)")
	fs.IntVar(&opts.replicas, "replicas", 1, "kmsd replicas sharing the token and --database (more than 1 needs a postgres:// --database); the load is split evenly over them")
	fs.StringVar(&opts.profile, "cpu-profile", "", "write a CPU profile of kmsd during its first loaded run to this file")
	_ = fs.Parse(os.Args[1:])
	if opts.rounds < 1 {
		fmt.Fprintf(os.Stderr, "kmsbench: invalid --rounds %d: want 1 or more\n", opts.rounds)
		os.Exit(2)
	}

	if _, err := exec.LookPath("wrk"); err != nil {
		fmt.Fprintln(os.Stderr, "kmsbench: wrk is missing: install it with apt-get install wrk")
		os.Exit(2)
	}

	ctx := context.Background()
	ok, err := runBenchmark(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kmsbench:", err)
		os.Exit(2)
	}
	if !ok {
		fmt.Fprintln(os.Stderr, "kmsbench: FAILED: some responses were wrong (see the failures column)")
		os.Exit(1)
	}
}

type options struct {
	kmsd        string
	duration    time.Duration
	rounds      int
	connections int
	threads     int
	skipSingle  bool
	skipCeiling bool
	ops         string
	kmsdArgs    string
	kmsdEnv     string
	against     string
	againstEnv  string
	database    string
	profile     string
	replicas    int
}
