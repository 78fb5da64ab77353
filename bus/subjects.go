package bus

import (
	"fmt"
)

// Names on the bus. They are part of the public protocol (docs/bus-protocol.md).
const (
	// TrajStream is the JetStream stream that holds every run's trajectories.
	TrajStream = "SPA_TRAJ"
	// PolicyBucket is the JetStream KV bucket with the current policy version of each run.
	PolicyBucket = "spa_policy"
)

// TrajSubject is the subject a run's trajectories are published on.
func TrajSubject(run string) string { return "spa.traj." + run }

// EnvSubject is the subject of an environment-wide operation ("spec", "reset").
func EnvSubject(env, op string) string { return "spa.env." + env + "." + op }

// HostsSubject is where every environment host answers "who is serving?" (spa env list --bus): a
// request there gathers one HostInfo reply per host.
const HostsSubject = "spa.env.hosts"

// EnvQueue is the queue group every host of env joins, so each request reaches one host.
func EnvQueue(env string) string { return "spa.env." + env }

// HostSubject is the prefix of one host's session operations; the host answers <prefix>.step,
// <prefix>.close and <prefix>.explore.
func HostSubject(env, host string) string { return "spa.env." + env + ".host." + host }

// CheckName checks that s can be a run id, environment name or host id: it becomes one subject
// token, a KV key and part of a consumer name, so only letters, digits, '-' and '_' are allowed.
func CheckName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", kind)
	}
	if len(s) > 64 {
		return fmt.Errorf("%s %q is longer than 64 characters", kind, s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("%s %q has %q; use letters, digits, '-' and '_'", kind, s, r)
		}
	}
	return nil
}
