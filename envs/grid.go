package envs

import (
	"fmt"
	"strings"
)

// Pos is a zero-indexed (row, column) grid position.
type Pos struct{ R, C int }

// Add moves p by d.
func (p Pos) Add(d Pos) Pos { return Pos{p.R + d.R, p.C + d.C} }

// String writes p as the prompts do: "(r,c)".
func (p Pos) String() string { return fmt.Sprintf("(%d,%d)", p.R, p.C) }

// Directions of the grid environments' moves.
var (
	Up    = Pos{-1, 0}
	Down  = Pos{1, 0}
	Left  = Pos{0, -1}
	Right = Pos{0, 1}
)

// Directions returns the four moves, in a fixed order.
func Directions() [4]Pos { return [4]Pos{Up, Down, Left, Right} }

// ParseDirection reads a move name, case-insensitively.
func ParseDirection(s string) (Pos, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "up":
		return Up, true
	case "down":
		return Down, true
	case "left":
		return Left, true
	case "right":
		return Right, true
	}
	return Pos{}, false
}

// JoinPositions lists positions as "(1,2), (3,4)".
func JoinPositions(ps []Pos) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ", ")
}

// Phrase writes "box (X) is at (1,2)" or "boxes (X) are at (1,2), (3,4)".
func Phrase(singular, plural, symbol string, ps []Pos) string {
	if len(ps) == 1 {
		return fmt.Sprintf("%s (%s) is at %s", singular, symbol, ps[0])
	}
	return fmt.Sprintf("%s (%s) are at %s", plural, symbol, JoinPositions(ps))
}
