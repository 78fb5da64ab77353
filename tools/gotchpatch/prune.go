package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// gotchModule is gotch's import path; its packages are the ones a consumer's imports can reach.
const gotchModule = "github.com/sugarme/gotch"

// generatedGo are gotch's generated Go files: a wrapper per libtorch operator, 2,485 in each.
var generatedGo = []string{"ts/tensor-generated.go", "ts/must-tensor-generated.go", "libtch/c-generated.go"}

// usage is what a consumer of gotch (spa) uses of it: the gotch packages its Go files import,
// and the names of gotch's generated functions that its Go files name anywhere (x.MustFoo(),
// ts.Foo, a method value), over-approximating what they reach. Every file counts, not only those
// that import gotch: a method of a tensor that another package returned needs no import. Other
// names are dropped, so that the stamp changes only when the code names another operator.
type usage struct {
	packages []string // import paths under gotchModule
	names    map[string]bool
}

// digest identifies the usage, for the stamp: a copy pruned for one usage is rebuilt for another.
func (u usage) digest() string {
	names := make([]string, 0, len(u.names))
	for n := range u.names {
		names = append(names, n)
	}
	slices.Sort(names)
	h := sha256.Sum256([]byte(strings.Join(u.packages, " ") + "\n" + strings.Join(names, " ")))
	return fmt.Sprintf("%x", h[:8])
}

// readUsage walks the consumer's module at root, skipping folders that hold no code of its own
// (third_party, where the patched copy lives; testdata; node_modules; hidden folders). gotch is
// the pristine module, whose generated function names are the ones that count.
func readUsage(root, gotch string) (usage, error) {
	generated, err := generatedNames(gotch)
	if err != nil {
		return usage{}, err
	}
	u := usage{names: map[string]bool{}}
	pkgs := map[string]bool{}
	fset := token.NewFileSet()
	all := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "third_party" || name == "testdata" || name == "node_modules" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("parse %s: %w", path, err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p == gotchModule || strings.HasPrefix(p, gotchModule+"/") {
				pkgs[p] = true
			}
		}
		addNames(f, all)
		return nil
	})
	if err != nil {
		return usage{}, err
	}
	for n := range all {
		if generated[n] {
			u.names[n] = true
		}
	}
	for p := range pkgs {
		u.packages = append(u.packages, p)
	}
	slices.Sort(u.packages)
	return u, nil
}

// generatedNames lists the functions and methods of gotch's generated Go files under dir.
func generatedNames(dir string) (map[string]bool, error) {
	names := map[string]bool{}
	fset := token.NewFileSet()
	for _, g := range generatedGo {
		path := filepath.Join(dir, g)
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok {
				names[fd.Name.Name] = true
			}
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no functions in gotch's generated Go files under %s; update generatedGo", dir)
	}
	return names, nil
}

// addNames adds every identifier under n to names. Selectors and calls are what matter; taking
// every identifier keeps a little more than needed and misses nothing.
func addNames(n ast.Node, names map[string]bool) {
	ast.Inspect(n, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok {
			names[id.Name] = true
		}
		return true
	})
}

// pruneStats says how much of the generated code a prune kept.
type pruneStats struct{ goKept, goTotal, cKept, cTotal int }

// prune deletes the generated wrappers that u cannot reach from the copy of gotch at dir: the
// Go functions of generatedGo that no kept code names, and the C++ wrappers (atg_*) that no
// kept Go calls. Every wrapper is one function in a 760 kB C++ file and a 1.8 MB Go file that a
// fresh build compiles on one core; spa reaches about 130 of them. The hand-written Go
// files of every gotch package the consumer imports, directly or through gotch, are kept whole,
// and what they name is reachable. A consumer that starts calling another operator changes its
// usage, and with it the stamp, so setup derives the copy again.
func prune(dir string, u usage) (pruneStats, error) {
	var st pruneStats
	reached := map[string]bool{}
	for n := range u.names {
		reached[n] = true
	}
	fset := token.NewFileSet()
	generated := map[string]bool{}
	for _, g := range generatedGo {
		generated[filepath.Join(dir, g)] = true
	}
	// The gotch packages the consumer compiles: its imports and theirs, within gotch.
	queue := slices.Clone(u.packages)
	seen := map[string]bool{}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		pkgDir := filepath.Join(dir, strings.TrimPrefix(strings.TrimPrefix(p, gotchModule), "/"))
		files, err := filepath.Glob(filepath.Join(pkgDir, "*.go"))
		if err != nil {
			return st, err
		}
		if len(files) == 0 {
			return st, fmt.Errorf("prune: gotch package %s has no Go files in %s", p, pkgDir)
		}
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") || generated[path] {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return st, fmt.Errorf("prune: parse %s: %w", path, err)
			}
			for _, imp := range f.Imports {
				q, _ := strconv.Unquote(imp.Path.Value)
				if strings.HasPrefix(q, gotchModule+"/") {
					queue = append(queue, q)
				}
			}
			addNames(f, reached)
		}
	}

	// The generated Go functions, by name, with the names each body uses; then what the
	// reached names reach, until nothing more is added.
	type decl struct {
		file       int
		start, end int // byte offsets, doc comment included
		uses       map[string]bool
	}
	byName := map[string][]*decl{}
	var all []*decl
	srcs := make([][]byte, len(generatedGo))
	for i, g := range generatedGo {
		path := filepath.Join(dir, g)
		src, err := os.ReadFile(path)
		if err != nil {
			return st, err
		}
		f, err := parser.ParseFile(fset, path, src, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return st, fmt.Errorf("prune: parse %s: %w", path, err)
		}
		srcs[i] = src
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			start := fd.Pos()
			if fd.Doc != nil {
				start = fd.Doc.Pos()
			}
			dc := &decl{file: i, start: fset.Position(start).Offset, end: fset.Position(fd.End()).Offset, uses: map[string]bool{}}
			if fd.Body != nil {
				addNames(fd.Body, dc.uses)
			}
			byName[fd.Name.Name] = append(byName[fd.Name.Name], dc)
			all = append(all, dc)
		}
	}
	if len(all) == 0 {
		return st, errors.New("prune: no functions in gotch's generated Go files; update generatedGo")
	}
	kept := map[*decl]bool{}
	var work []string
	for n := range reached {
		work = append(work, n)
	}
	for len(work) > 0 {
		n := work[len(work)-1]
		work = work[:len(work)-1]
		for _, dc := range byName[n] {
			if kept[dc] {
				continue
			}
			kept[dc] = true
			for m := range dc.uses {
				if !reached[m] {
					reached[m] = true
					work = append(work, m)
				}
			}
		}
	}
	st.goTotal, st.goKept = len(all), len(kept)

	for i, g := range generatedGo {
		var cut [][2]int
		for _, dc := range all {
			if dc.file == i && !kept[dc] {
				cut = append(cut, [2]int{dc.start, dc.end})
			}
		}
		code := deleteRanges(srcs[i], cut)
		code, err := dropUnusedImports(code)
		if err != nil {
			return st, fmt.Errorf("prune: %s: %w", g, err)
		}
		if err := os.WriteFile(filepath.Join(dir, g), code, 0o644); err != nil {
			return st, err
		}
	}

	// The C++ wrappers: keep those a kept Go function (or a hand-written file) names.
	path := filepath.Join(dir, "libtch", generatedFile)
	code, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	spans, err := generatedSpans(strings.Split(string(code), "\n"))
	if err != nil {
		return st, err
	}
	lines := strings.Split(string(code), "\n")
	var out []string
	prev := 0
	for _, s := range spans {
		st.cTotal++
		if reached[s.name] {
			st.cKept++
			continue
		}
		out = append(out, lines[prev:s.start]...)
		prev = s.end + 1
		// The blank line after a deleted function goes with it.
		if prev < len(lines) && strings.TrimSpace(lines[prev]) == "" {
			prev++
		}
	}
	out = append(out, lines[prev:]...)
	if st.cKept == 0 {
		return st, fmt.Errorf("prune: no C++ wrapper in %s is called from the kept Go code; the names no longer match", generatedFile)
	}
	return st, os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644)
}

// deleteRanges removes the byte ranges (sorted, disjoint) from src, each with the newline after it.
func deleteRanges(src []byte, cut [][2]int) []byte {
	slices.SortFunc(cut, func(a, b [2]int) int { return a[0] - b[0] })
	out := make([]byte, 0, len(src))
	prev := 0
	for _, c := range cut {
		out = append(out, src[prev:c[0]]...)
		prev = c[1]
		for prev < len(src) && (src[prev] == ' ' || src[prev] == '\t') {
			prev++
		}
		if prev < len(src) && src[prev] == '\n' {
			prev++
		}
	}
	return append(out, src[prev:]...)
}

// dropUnusedImports removes the imports that the pruned code no longer uses (Go refuses unused
// imports); import "C" always stays.
func dropUnusedImports(code []byte) ([]byte, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "", code, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok {
				used[id.Name] = true
			}
		}
		return true
	})
	var cut [][2]int
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if p == "C" {
			continue
		}
		name := p[strings.LastIndex(p, "/")+1:]
		if imp.Name != nil {
			name = imp.Name.Name
		}
		if name == "_" || used[name] {
			continue
		}
		start, end := fset.Position(imp.Pos()).Offset, fset.Position(imp.End()).Offset
		// A single import is a whole declaration: "import "unsafe"".
		if line := lineStart(code, start); strings.HasPrefix(string(code[line:start]), "import") {
			start = line
		}
		cut = append(cut, [2]int{start, end})
	}
	return deleteRanges(code, cut), nil
}

func lineStart(b []byte, i int) int {
	for i > 0 && b[i-1] != '\n' {
		i--
	}
	return i
}
