package envs

// Episode is the bookkeeping every environment shares: whether an episode has started, how much
// of the action budget valid actions have used, and whether it has ended.
type Episode struct {
	budget, used  int
	started, done bool
}

// Start begins an episode with the given action budget.
func (ep *Episode) Start(budget int) { *ep = Episode{budget: budget, started: true} }

// Check returns the error for a step that must not happen now.
func (ep *Episode) Check() error {
	switch {
	case !ep.started:
		return ErrNotReset
	case ep.done:
		return ErrEpisodeDone
	}
	return nil
}

// Use records one valid action; the episode ends when over is true or the budget is spent. It
// returns whether the episode has ended.
func (ep *Episode) Use(over bool) bool {
	ep.used++
	ep.done = over || ep.used >= ep.budget
	return ep.done
}

// Used is the number of valid actions so far.
func (ep *Episode) Used() int { return ep.used }
