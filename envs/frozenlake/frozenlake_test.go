package frozenlake

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/envs/envtest"
)

func parseMap(lines []string) (Map, []int, error) {
	var m Map
	var slips []int
	for _, line := range lines {
		if rest, ok := strings.CutPrefix(line, "slips "); ok {
			for _, f := range strings.Fields(rest) {
				n, err := strconv.Atoi(f)
				if err != nil {
					return m, nil, err
				}
				slips = append(slips, n)
			}
			continue
		}
		r := len(m.Holes)
		row := make([]bool, 0, len(line))
		for c, ch := range line {
			switch ch {
			case 'O':
			case 'P':
				m.Start = envs.Pos{R: r, C: c}
			case 'G':
				m.Goal = envs.Pos{R: r, C: c}
			case '_':
			default:
				return m, nil, fmt.Errorf("unknown symbol %q", ch)
			}
			row = append(row, ch == 'O')
		}
		m.Holes = append(m.Holes, row)
	}
	m.Size = len(m.Holes)
	return m, slips, nil
}

func TestSteps(t *testing.T) {
	envtest.Run(t, "testdata/steps.txt", func(initial []string) (envs.Env, error) {
		m, slips, err := parseMap(initial)
		if err != nil {
			return nil, err
		}
		e := New(m.Size)
		e.Load(m, 0)
		e.slip = func() int {
			if len(slips) == 0 {
				panic("script ran out of slips")
			}
			s := slips[0]
			slips = slips[1:]
			return s
		}
		return e, nil
	})
}

// connected is an independent path check (depth-first, unlike HasPath's breadth-first search).
func connected(m Map) bool {
	seen := map[envs.Pos]bool{}
	var dfs func(p envs.Pos) bool
	dfs = func(p envs.Pos) bool {
		if p.R < 0 || p.C < 0 || p.R >= m.Size || p.C >= m.Size || m.Holes[p.R][p.C] || seen[p] {
			return false
		}
		seen[p] = true
		return p == m.Goal || dfs(p.Add(envs.Up)) || dfs(p.Add(envs.Down)) || dfs(p.Add(envs.Left)) || dfs(p.Add(envs.Right))
	}
	return dfs(m.Start)
}

func TestMapsAreConnected(t *testing.T) {
	for _, size := range []int{4, 6} {
		holes, cells := 0, 0
		for seed := int64(0); seed < 1000; seed++ {
			m, err := Generate(size, seed)
			if err != nil {
				t.Fatal(err)
			}
			if m.Start == m.Goal || m.Holes[m.Start.R][m.Start.C] || m.Holes[m.Goal.R][m.Goal.C] {
				t.Fatalf("%dx%d seed %d: bad start or goal %+v", size, size, seed, m)
			}
			if !connected(m) {
				t.Fatalf("%dx%d seed %d: no path from start to goal", size, size, seed)
			}
			for _, row := range m.Holes {
				for _, h := range row {
					cells++
					if h {
						holes++
					}
				}
			}
		}
		// Resampling disconnected maps lowers the hole share a little below 0.2.
		share := float64(holes) / float64(cells)
		t.Logf("%dx%d: hole share %.3f over 1000 maps", size, size, share)
		if share < 0.10 || share > 0.21 {
			t.Errorf("%dx%d: hole share %.3f, want about 0.2", size, size, share)
		}
	}
}

// The real slip draws pick the intended move and each perpendicular one about a third each.
func TestSlipProbabilities(t *testing.T) {
	counts := [3]int{}
	const n = 30000
	e := New(4)
	e.Load(Map{Size: 4, Holes: make([][]bool, 4)}, 7)
	for i := 0; i < n; i++ {
		counts[e.slip()]++
	}
	for k, c := range counts {
		if math.Abs(float64(c)/n-1.0/3) > 0.015 {
			t.Errorf("slip %d happened %.3f of the time, want 1/3", k, float64(c)/n)
		}
	}
}

func TestSameSeedSameGame(t *testing.T) {
	actions := strings.Fields("Down Right Down Right Up Left Down Right Down Right")
	for seed := int64(0); seed < 100; seed++ {
		a, _ := envtest.Play(New(4), seed, actions)
		b, _ := envtest.Play(New(4), seed, actions)
		if a != b {
			t.Fatalf("seed %d played twice differs:\n%s\n---\n%s", seed, a, b)
		}
	}
}

func FuzzStep(f *testing.F) {
	for _, s := range []string{"Left", "down", " RIGHT ", "up!", "", "Up || Down"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, action string) {
		e := New(4)
		if err := e.Reset(3); err != nil {
			t.Fatal(err)
		}
		before := e.Render(envs.Coords)
		st, err := e.Step(action)
		if err != nil {
			t.Fatal(err)
		}
		if _, known := envs.ParseDirection(action); st.Valid != known {
			t.Fatalf("%q: valid = %v", action, st.Valid)
		}
		if !st.Valid && e.Render(envs.Coords) != before {
			t.Fatalf("invalid action %q changed the game", action)
		}
	})
}
