package config

import (
	"bytes"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// YAML renders c as a YAML document in declaration order, each key with its description as a
// comment and secrets masked. Loading the output gives c back (apart from masked secrets).
func (c Config) YAML() ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	sections := map[string]*yaml.Node{"": root}
	v := reflect.ValueOf(c)
	for _, k := range keys {
		parent := ""
		node := root
		parts := strings.Split(k.Path, ".")
		for _, p := range parts[:len(parts)-1] {
			path := strings.TrimPrefix(parent+"."+p, ".")
			child, ok := sections[path]
			if !ok {
				child = &yaml.Node{Kind: yaml.MappingNode}
				node.Content = append(node.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: p}, child)
				sections[path] = child
			}
			node, parent = child, path
		}
		keyNode := &yaml.Node{Kind: yaml.ScalarNode, Value: parts[len(parts)-1]}
		valNode := valueNode(v.FieldByIndex(k.index), k.Secret)
		valNode.LineComment = k.Doc
		node.Content = append(node.Content, keyNode, valNode)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func valueNode(f reflect.Value, secret bool) *yaml.Node {
	scalar := func(tag, value string) *yaml.Node {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
	}
	switch {
	case secret:
		if f.String() == "" {
			return scalar("!!str", "")
		}
		return scalar("!!str", "<set>")
	case f.Type() == durationType:
		return scalar("!!str", time.Duration(f.Int()).String())
	case f.Kind() == reflect.String:
		return scalar("!!str", f.String())
	case f.Kind() == reflect.Int:
		return scalar("!!int", strconv.FormatInt(f.Int(), 10))
	case f.Kind() == reflect.Float64:
		s := strconv.FormatFloat(f.Float(), 'g', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		return scalar("!!float", s)
	case f.Kind() == reflect.Bool:
		return scalar("!!bool", strconv.FormatBool(f.Bool()))
	case f.Kind() == reflect.Slice:
		seq := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for i := 0; i < f.Len(); i++ {
			seq.Content = append(seq.Content, scalar("!!str", f.Index(i).String()))
		}
		return seq
	}
	return scalar("!!str", f.String())
}
