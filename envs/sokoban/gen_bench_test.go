package sokoban

import "testing"

func BenchmarkGenerate(b *testing.B) {
	for _, v := range []string{"6x6-1box", "10x10-2box"} {
		cfg, _ := ParseVariant(v)
		b.Run(v, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := Generate(cfg, int64(i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
