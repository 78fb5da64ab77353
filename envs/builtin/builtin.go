// Package builtin registers spa's built-in environments: import it for its side effect.
package builtin

import (
	_ "github.com/spa-rl/spa/envs/frozenlake" // registers "frozenlake"
	_ "github.com/spa-rl/spa/envs/sokoban"    // registers "sokoban"
	_ "github.com/spa-rl/spa/envs/sudoku"     // registers "sudoku"
)
