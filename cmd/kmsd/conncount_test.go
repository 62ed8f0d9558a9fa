package main

import (
	"net/http"
	"testing"
)

func TestConnCounterTracksStates(t *testing.T) {
	var c connCounter
	steps := []struct {
		state http.ConnState
		want  int
	}{
		{http.StateNew, 1},
		{http.StateNew, 2},
		{http.StateActive, 2},
		{http.StateIdle, 2},
		{http.StateHijacked, 1},
		{http.StateClosed, 0},
	}
	for _, step := range steps {
		c.track(nil, step.state)
		if got := c.count(); got != step.want {
			t.Errorf("after %s: count = %d, want %d", step.state, got, step.want)
		}
	}
}
