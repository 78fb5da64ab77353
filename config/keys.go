package config

import (
	"reflect"
	"sort"
	"strings"
)

// Key describes one configuration key.
type Key struct {
	Path   string // dotted key, e.g. "rollout.workers"
	Env    string // environment variable, e.g. "SPA_ROLLOUT_WORKERS"
	Doc    string // one-line description
	Check  string // validation rule (check.go)
	Secret bool   // masked when printed
	Type   reflect.Type
	index  []int
}

// keys is computed once from the Config type and never changed.
var keys = collectKeys(reflect.TypeOf(Config{}), "", nil)

// Keys returns every configuration key in declaration order.
func Keys() []Key { return append([]Key(nil), keys...) }

// Lookup returns the key with the given dotted path.
func Lookup(path string) (Key, bool) {
	for _, k := range keys {
		if k.Path == path {
			return k, true
		}
	}
	return Key{}, false
}

// Value is the key's value in c.
func (k Key) Value(c Config) any { return reflect.ValueOf(c).FieldByIndex(k.index).Interface() }

func collectKeys(t reflect.Type, prefix string, index []int) []Key {
	var out []Key
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		path := prefix + name
		idx := append(append([]int(nil), index...), i)
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			out = append(out, collectKeys(f.Type, path+".", idx)...)
			continue
		}
		out = append(out, Key{
			Path:   path,
			Env:    envName(path),
			Doc:    f.Tag.Get("doc"),
			Check:  f.Tag.Get("check"),
			Secret: f.Tag.Get("secret") == "true",
			Type:   f.Type,
			index:  idx,
		})
	}
	return out
}

func envName(path string) string {
	return "SPA_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// isSection reports whether path names a group of keys (rollout, learner.ppo).
func isSection(path string) bool {
	for _, k := range keys {
		if strings.HasPrefix(k.Path, path+".") {
			return true
		}
	}
	return false
}

// suggest returns the known key closest to an unknown one, if it is close enough to be a typo.
func suggest(unknown string) string {
	best, bestDist := "", 4
	for _, k := range keys {
		if d := editDistance(unknown, k.Path); d < bestDist {
			best, bestDist = k.Path, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func sortedUnique(in []string) []string {
	sort.Strings(in)
	out := in[:0]
	for i, s := range in {
		if i == 0 || s != in[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// WithoutSecrets returns c with every secret key (Key.Secret) emptied, for writing a
// configuration to disk, where anyone who can read the run directory could read it.
func WithoutSecrets(c Config) Config {
	v := reflect.ValueOf(&c).Elem()
	for _, k := range keys {
		if k.Secret {
			f := v.FieldByIndex(k.index)
			f.Set(reflect.Zero(f.Type()))
		}
	}
	return c
}

// RestoreSecrets fills the secret keys that saved lacks (a configuration written by
// WithoutSecrets) from current, the configuration of this invocation (its flags, SPA_*
// variables and file).
func RestoreSecrets(saved *Config, current Config) {
	dst, src := reflect.ValueOf(saved).Elem(), reflect.ValueOf(current)
	for _, k := range keys {
		if !k.Secret {
			continue
		}
		if f := dst.FieldByIndex(k.index); f.IsZero() {
			f.Set(src.FieldByIndex(k.index))
		}
	}
}
