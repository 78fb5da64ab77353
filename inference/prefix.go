package inference

import (
	"container/list"
	"encoding/binary"
	"hash/fnv"

	"github.com/sugarme/gotch/ts"
)

// prefixBlock is the granularity of prefix reuse, in tokens.
const prefixBlock = 16

// prefixCache keeps the keys and values of recently finished sequences, so that a later prompt
// that starts with the same tokens (the next turn of a multi-turn episode re-sends its whole
// history) skips recomputing them, as vLLM's automatic prefix caching does. Entries are keyed by a
// hash chain over whole blocks of tokens and the request's cache salt; each version has its own
// cache, so versions never share keys and values. Least recently used entries go first when the
// memory budget is full. Only the engine goroutine touches it.
type prefixCache struct {
	budget  int64
	used    int64
	perTok  int64
	entries map[uint64]*list.Element
	lru     *list.List // front: most recent
}

type prefixEntry struct {
	key  uint64
	n    int
	k, v []*ts.Tensor // per layer [kv heads, n, head dim]
}

func newPrefixCache(budgetBytes, bytesPerToken int64) *prefixCache {
	return &prefixCache{budget: budgetBytes, perTok: bytesPerToken, entries: map[uint64]*list.Element{}, lru: list.New()}
}

// chain returns the hash of each whole-block prefix of tokens: out[i] covers tokens[:(i+1)*block].
func chain(salt string, tokens []int, blocks int) []uint64 {
	h := fnv.New64a()
	h.Write([]byte(salt))
	h.Write([]byte{0})
	out := make([]uint64, 0, blocks)
	var buf [4]byte
	for b := range blocks {
		for _, t := range tokens[b*prefixBlock : (b+1)*prefixBlock] {
			binary.LittleEndian.PutUint32(buf[:], uint32(t))
			h.Write(buf[:])
		}
		out = append(out, h.Sum64())
	}
	return out
}

// lookup finds the longest cached prefix of prompt, leaving at least one token to compute (the
// model needs a position to predict from).
func (c *prefixCache) lookup(salt string, prompt []int) *prefixEntry {
	if c == nil {
		return nil
	}
	blocks := (len(prompt) - 1) / prefixBlock
	if blocks == 0 {
		return nil
	}
	hashes := chain(salt, prompt, blocks)
	for i := blocks - 1; i >= 0; i-- {
		if el, ok := c.entries[hashes[i]]; ok {
			c.lru.MoveToFront(el)
			return el.Value.(*prefixEntry)
		}
	}
	return nil
}

// store keeps the first whole blocks of tokens, whose keys and values read returns, unless
// an entry for them exists. It evicts least recently used entries to stay within budget.
func (c *prefixCache) store(salt string, tokens []int, read func(n int) ([]*ts.Tensor, []*ts.Tensor)) {
	if c == nil {
		return
	}
	blocks := len(tokens) / prefixBlock
	if blocks == 0 {
		return
	}
	n := blocks * prefixBlock
	size := int64(n) * c.perTok
	if size > c.budget {
		return
	}
	key := chain(salt, tokens, blocks)[blocks-1]
	if el, ok := c.entries[key]; ok {
		c.lru.MoveToFront(el)
		return
	}
	for c.used+size > c.budget && c.lru.Len() > 0 {
		c.evict(c.lru.Back())
	}
	k, v := read(n)
	c.entries[key] = c.lru.PushFront(&prefixEntry{key: key, n: n, k: k, v: v})
	c.used += size
}

func (c *prefixCache) evict(el *list.Element) {
	e := el.Value.(*prefixEntry)
	for i := range e.k {
		e.k[i].MustDrop()
		e.v[i].MustDrop()
	}
	c.lru.Remove(el)
	delete(c.entries, e.key)
	c.used -= int64(e.n) * c.perTok
}

func (c *prefixCache) drop() {
	if c == nil {
		return
	}
	for c.lru.Len() > 0 {
		c.evict(c.lru.Back())
	}
}
