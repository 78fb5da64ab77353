package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
)

var durationType = reflect.TypeOf(time.Duration(0))

// Sources are the layers Load merges, lowest precedence first after the defaults.
type Sources struct {
	// File is a YAML file; empty means none.
	File string
	// Environ is the process environment (os.Environ()); its SPA_* variables are read.
	Environ []string
	// Flags maps keys to values given on the command line.
	Flags map[string]string
	// Preset maps keys to values of a named preset (spa run's smoke, quick, paper); they sit
	// above the built-in defaults and below everything else.
	Preset map[string]string
}

// Error lists every problem Load found, one per line, each naming the key and where the value
// came from.
type Error struct {
	Problems []string
}

func (e *Error) Error() string { return strings.Join(e.Problems, "\n") }

// Load merges defaults < file < environment < flags and returns a validated Config.
func Load(src Sources) (Config, error) {
	v := viper.New()
	def := reflect.ValueOf(Default())
	for _, k := range keys {
		v.SetDefault(k.Path, def.FieldByIndex(k.index).Interface())
	}
	var problems []string
	origin := map[string]string{}
	for path, value := range src.Preset {
		if _, ok := Lookup(path); !ok {
			problems = append(problems, fmt.Sprintf("%s: unknown key (in the preset)", path))
			continue
		}
		v.SetDefault(path, value)
		origin[path] = "the preset"
	}

	if src.File != "" {
		v.SetConfigFile(src.File)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("read config %s: %w", src.File, err)
		}
		for _, path := range v.AllKeys() {
			if _, ok := Lookup(path); ok {
				origin[path] = src.File
				continue
			}
			problems = append(problems, fmt.Sprintf("%s: %s (in %s)", path, unknownKey(path, v), src.File))
		}
	}

	envLayer := map[string]any{}
	for _, kv := range src.Environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "SPA_") {
			continue
		}
		k, ok := keyForEnv(name)
		if !ok {
			msg := fmt.Sprintf("%s: unknown environment variable: no key %s", name, strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "SPA_"), "_", ".")))
			if s := suggest(strings.ToLower(strings.TrimPrefix(name, "SPA_"))); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", envName(s))
			}
			problems = append(problems, msg)
			continue
		}
		setNested(envLayer, k.Path, value)
		origin[k.Path] = name
	}
	// Merged into the config layer, so environment values sit above the file and below flags.
	if err := v.MergeConfigMap(envLayer); err != nil {
		return Config{}, fmt.Errorf("merge environment: %w", err)
	}

	for path, value := range src.Flags {
		if _, ok := Lookup(path); !ok {
			msg := fmt.Sprintf("%s: unknown key (given on the command line)", path)
			if s := suggest(path); s != "" {
				msg = fmt.Sprintf("%s: unknown key (given on the command line; did you mean %s?)", path, s)
			}
			problems = append(problems, msg)
			continue
		}
		v.Set(path, value)
		origin[path] = "the command line"
	}

	var cfg Config
	out := reflect.ValueOf(&cfg).Elem()
	bad := map[string]bool{}
	for _, k := range keys {
		if err := assign(out.FieldByIndex(k.index), v.Get(k.Path)); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v%s", k.Path, err, from(origin, k.Path)))
			bad[k.Path] = true
		}
	}
	for _, p := range cfg.problems() {
		if !bad[p.key] {
			problems = append(problems, fmt.Sprintf("%s: %s%s", p.key, p.msg, from(origin, p.key)))
		}
	}
	if len(problems) > 0 {
		return cfg, &Error{Problems: sortedUnique(problems)}
	}
	return cfg, nil
}

func from(origin map[string]string, path string) string {
	if o, ok := origin[path]; ok {
		return " (from " + o + ")"
	}
	return ""
}

func unknownKey(path string, v *viper.Viper) string {
	// A scalar where a section belongs: `rollout: 5`.
	if isSection(path) {
		return fmt.Sprintf("must be a mapping of keys, got %v", v.Get(path))
	}
	if s := suggest(path); s != "" {
		return fmt.Sprintf("unknown key (did you mean %s?)", s)
	}
	return "unknown key"
}

func keyForEnv(name string) (Key, bool) {
	for _, k := range keys {
		if k.Env == name {
			return k, true
		}
	}
	return Key{}, false
}

func setNested(m map[string]any, path string, value any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = value
}

var errMapping = errors.New("must be a single value, not a mapping")

// assign converts raw (typed from YAML and defaults, strings from the environment and flags) into
// field, strictly: no booleans as numbers, no fractions as integers.
func assign(field reflect.Value, raw any) error {
	if _, ok := raw.(map[string]any); ok {
		return errMapping
	}
	switch {
	case field.Type() == durationType:
		d, err := toDuration(raw)
		if err != nil {
			return err
		}
		field.SetInt(int64(d))
	case field.Kind() == reflect.String:
		s, err := toString(raw)
		if err != nil {
			return err
		}
		field.SetString(s)
	case field.Kind() == reflect.Int:
		n, err := toInt(raw)
		if err != nil {
			return err
		}
		field.SetInt(int64(n))
	case field.Kind() == reflect.Float64:
		f, err := toFloat(raw)
		if err != nil {
			return err
		}
		field.SetFloat(f)
	case field.Kind() == reflect.Bool:
		b, err := toBool(raw)
		if err != nil {
			return err
		}
		field.SetBool(b)
	case field.Kind() == reflect.Slice && field.Type().Elem().Kind() == reflect.String:
		list, err := toStrings(raw)
		if err != nil {
			return err
		}
		field.Set(reflect.ValueOf(list))
	default:
		return fmt.Errorf("unsupported field type %s", field.Type())
	}
	return nil
}

func toString(raw any) (string, error) {
	switch x := raw.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case int, int64, float64, bool:
		// YAML reads `id: 2024` as a number; as a string key that is still what the user meant.
		return fmt.Sprint(x), nil
	}
	return "", fmt.Errorf("must be a string, got %v", raw)
}

func toInt(raw any) (int, error) {
	switch x := raw.(type) {
	case int:
		return x, nil
	case int64:
		return int(x), nil
	case uint64:
		if x > math.MaxInt {
			return 0, fmt.Errorf("must be an integer in range, got %d", x)
		}
		return int(x), nil
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > math.MaxInt32 {
			return 0, fmt.Errorf("must be an integer, got %v", x)
		}
		return int(x), nil
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil {
			return 0, fmt.Errorf("must be an integer, got %q", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("must be an integer, got %v", raw)
}

func toFloat(raw any) (float64, error) {
	switch x := raw.(type) {
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, fmt.Errorf("must be a finite number, got %v", x)
		}
		return x, nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("must be a number, got %q", x)
		}
		return f, nil
	}
	return 0, fmt.Errorf("must be a number, got %v", raw)
}

func toBool(raw any) (bool, error) {
	switch x := raw.(type) {
	case bool:
		return x, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		if err != nil {
			return false, fmt.Errorf("must be true or false, got %q", x)
		}
		return b, nil
	}
	return false, fmt.Errorf("must be true or false, got %v", raw)
}

func toDuration(raw any) (time.Duration, error) {
	switch x := raw.(type) {
	case time.Duration:
		return x, nil
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(x))
		if err != nil {
			return 0, fmt.Errorf("must be a duration such as 30s or 5m, got %q", x)
		}
		return d, nil
	}
	return 0, fmt.Errorf("must be a duration such as 30s or 5m, got %v", raw)
}

// toStrings accepts a YAML list or a comma-separated string (environment variables and flags).
func toStrings(raw any) ([]string, error) {
	switch x := raw.(type) {
	case nil:
		return nil, nil
	case []string:
		return normList(append([]string{}, x...)), nil
	case []any:
		out := make([]string, 0, len(x))
		for i, item := range x {
			s, err := toString(item)
			if err != nil || item == nil {
				return nil, fmt.Errorf("item %d must be a string, got %v", i, item)
			}
			out = append(out, s)
		}
		return normList(out), nil
	case string:
		var out []string
		for _, part := range strings.Split(x, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
		return normList(out), nil
	}
	return nil, fmt.Errorf("must be a list of strings, got %v", raw)
}

// normList makes every empty list nil, so a list printed as [] loads back equal.
func normList(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	return l
}
