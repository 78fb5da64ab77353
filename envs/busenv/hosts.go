package busenv

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spa-rl/spa/bus"
)

// ListHosts asks every environment host on the bus who it is (bus.HostsSubject) and gathers the
// answers that arrive within wait, sorted by environment and host. Hosts that do not answer on
// that subject (it is optional) are not listed.
func ListHosts(ctx context.Context, nc *nats.Conn, wait time.Duration) ([]bus.HostInfo, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(bus.HostsSubject, inbox, []byte(`{"protocol":1}`)); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var out []bus.HostInfo
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break // the window closed
		}
		var info bus.HostInfo
		if json.Unmarshal(msg.Data, &info) != nil || info.Env == "" {
			continue // not a host's answer; the subject is open to anything on the bus
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Env != out[j].Env {
			return out[i].Env < out[j].Env
		}
		return out[i].Host < out[j].Host
	})
	return out, nil
}
