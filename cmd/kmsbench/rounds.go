package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// latencyHistogram counts wrk's latency samples by value in microseconds. It includes the
// samples that wrk adds to correct for coordinated omission, so its percentiles are the
// ones wrk prints.
type latencyHistogram map[int64]int64

// parseHistogram parses the "value:count value:count ..." list that the wrk script
// prints after HIST.
func parseHistogram(list string) (latencyHistogram, error) {
	h := latencyHistogram{}
	for _, field := range strings.Fields(list) {
		value, count, ok := strings.Cut(field, ":")
		if !ok {
			return nil, fmt.Errorf("invalid histogram entry %q: want value:count", field)
		}
		v, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid histogram value %q: %w", value, err)
		}
		c, err := strconv.ParseInt(count, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid histogram count %q: %w", count, err)
		}
		h[v] += c
	}
	return h, nil
}

// percentile returns the smallest value with at least p percent of the samples at or
// below it, ranked as wrk 4 ranks them (stats_percentile in its src/stats.c), or 0 for
// an empty histogram.
func (h latencyHistogram) percentile(p float64) float64 {
	var total int64
	for _, c := range h {
		total += c
	}
	if total == 0 {
		return 0
	}

	rank := int64(math.Round(p/100*float64(total) + 0.5))
	values := slices.Sorted(func(yield func(int64) bool) {
		for v := range h {
			if !yield(v) {
				return
			}
		}
	})
	var seen int64
	for _, v := range values {
		seen += h[v]
		if seen >= rank {
			return float64(v)
		}
	}
	return float64(values[len(values)-1])
}

// combine merges wrk runs into one result: counts add up, latency histograms merge, and
// the percentiles are taken from the merged histogram. Runs in sequence add their
// durations, and runs at the same time (concurrent) last as long as the longest.
func combine(runs []result, concurrent bool) result {
	var sum result
	merged := latencyHistogram{}
	for _, r := range runs {
		sum.Requests += r.Requests
		if concurrent {
			sum.DurationUS = max(sum.DurationUS, r.DurationUS)
		} else {
			sum.DurationUS += r.DurationUS
		}
		sum.Connect += r.Connect
		sum.Read += r.Read
		sum.Write += r.Write
		sum.Status += r.Status
		sum.Timeout += r.Timeout
		sum.Failures += r.Failures
		sum.Checked += r.Checked
		for v, c := range r.latency {
			merged[v] += c
		}
	}

	sum.latency = merged
	sum.P50, sum.P99, sum.P999 = merged.percentile(50), merged.percentile(99),
		merged.percentile(99.9)
	return sum
}

// roundLength returns how long each of rounds wrk runs lasts within total: whole
// seconds, because wrk takes its duration in seconds, and at least one.
func roundLength(total time.Duration, rounds int) time.Duration {
	return max(time.Second, (total / time.Duration(max(rounds, 1))).Truncate(time.Second))
}
