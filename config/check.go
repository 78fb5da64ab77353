package config

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

type problem struct{ key, msg string }

// problems checks every key's rule (its check tag) and the rules that span several keys.
//
// Rules: ">0" ">=N" (numbers and durations); "[a,b]" "(a,b]" "[a,b)" intervals; "oneof=a b";
// "each=a b" (every list item); "nonempty"; "hostport" and "natsurl" and "httpurls" (empty is
// allowed for each); "device" (cpu, cuda, cuda:N); "dualclip" (0, or above 1).
func (c Config) problems() []problem {
	var out []problem
	v := reflect.ValueOf(c)
	for _, k := range keys {
		if k.Check == "" {
			continue
		}
		if msg := checkRule(k.Check, v.FieldByIndex(k.index)); msg != "" {
			out = append(out, problem{k.Path, msg})
		}
	}
	if (c.Bus.TLSCert == "") != (c.Bus.TLSKey == "") {
		out = append(out, problem{"bus.tls_key", "bus.tls_cert and bus.tls_key must be set together"})
	}
	if c.Bus.User != "" && c.Bus.Password == "" {
		out = append(out, problem{"bus.password", "required when bus.user is set"})
	}
	if c.Bus.Token != "" && c.Bus.User != "" {
		out = append(out, problem{"bus.token", "set either bus.token or bus.user, not both"})
	}
	if c.Learner.LoRA.Rank > 0 && len(c.Learner.LoRA.Targets) == 0 {
		out = append(out, problem{"learner.lora.targets", "must name at least one module when learner.lora.rank > 0"})
	}
	return out
}

var intervalRE = regexp.MustCompile(`^([\[(])([-0-9.e]+),([-0-9.e]+)([\])])$`)

func checkRule(rule string, field reflect.Value) string {
	name, arg, _ := strings.Cut(rule, "=")
	switch {
	case strings.HasPrefix(rule, ">="):
		n, _ := strconv.ParseFloat(rule[2:], 64)
		if num(field) < n {
			return fmt.Sprintf("must be >= %s, got %s", rule[2:], show(field))
		}
	case strings.HasPrefix(rule, ">"):
		n, _ := strconv.ParseFloat(rule[1:], 64)
		if num(field) <= n {
			return fmt.Sprintf("must be > %s, got %s", rule[1:], show(field))
		}
	case intervalRE.MatchString(rule):
		m := intervalRE.FindStringSubmatch(rule)
		lo, _ := strconv.ParseFloat(m[2], 64)
		hi, _ := strconv.ParseFloat(m[3], 64)
		x := num(field)
		if (m[1] == "[" && x < lo) || (m[1] == "(" && x <= lo) || (m[4] == "]" && x > hi) || (m[4] == ")" && x >= hi) {
			return fmt.Sprintf("must be in %s, got %s", rule, show(field))
		}
	case name == "oneof":
		if !contains(strings.Fields(arg), field.String()) {
			return fmt.Sprintf("must be one of %s, got %q", strings.Join(strings.Fields(arg), ", "), field.String())
		}
	case name == "each":
		for _, item := range field.Interface().([]string) {
			if !contains(strings.Fields(arg), item) {
				return fmt.Sprintf("%q is not one of %s", item, strings.Join(strings.Fields(arg), ", "))
			}
		}
	case rule == "nonempty":
		if strings.TrimSpace(field.String()) == "" {
			return "must not be empty"
		}
	case rule == "hostport":
		if s := field.String(); s != "" {
			if _, port, err := net.SplitHostPort(s); err != nil {
				return fmt.Sprintf("must be host:port, got %q", s)
			} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
				return fmt.Sprintf("port must be 0-65535, got %q", port)
			}
		}
	case rule == "natsurl":
		for _, u := range splitList(field.String()) {
			if msg := checkURL(u, "nats", "tls", "ws", "wss"); msg != "" {
				return msg
			}
		}
	case rule == "httpurls":
		for _, u := range field.Interface().([]string) {
			if msg := checkURL(u, "http", "https"); msg != "" {
				return msg
			}
		}
	case rule == "device":
		s := field.String()
		if s != "cpu" && s != "cuda" && !regexp.MustCompile(`^cuda:\d+$`).MatchString(s) {
			return fmt.Sprintf("must be cpu, cuda or cuda:N, got %q", s)
		}
	case rule == "dualclip":
		if x := field.Float(); x != 0 && x <= 1 {
			return fmt.Sprintf("must be 0 (off) or > 1, got %v", x)
		}
	default:
		return fmt.Sprintf("internal error: unknown check %q", rule)
	}
	return ""
}

func checkURL(raw string, schemes ...string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Sprintf("%q is not a URL with a host (%s://host:port)", raw, schemes[0])
	}
	if !contains(schemes, u.Scheme) {
		return fmt.Sprintf("%q: scheme must be one of %s", raw, strings.Join(schemes, ", "))
	}
	return ""
}

func num(v reflect.Value) float64 {
	switch v.Kind() {
	case reflect.Int, reflect.Int64:
		return float64(v.Int())
	case reflect.Float64:
		return v.Float()
	}
	return 0
}

func show(v reflect.Value) string {
	if v.Type() == durationType {
		return time.Duration(v.Int()).String()
	}
	return fmt.Sprint(v.Interface())
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
