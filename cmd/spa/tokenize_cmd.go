package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/model/tokenizer"
)

func newTokenizeCmd() *cobra.Command {
	var path string
	var decode, skipSpecial bool
	cmd := &cobra.Command{
		Use:   "tokenize --tokenizer PATH [--decode]",
		Short: "Encode JSON lines {\"text\": ...} to {\"ids\": [...]} with a checkpoint's tokenizer, or back",
		Long: `Read JSON lines from standard input and write one JSON line per input line:
{"text": "..."} becomes {"ids": [...]}, and with --decode {"ids": [...]} becomes {"text": "..."}.
--tokenizer is a tokenizer.json file or a checkpoint directory that holds one. No BOS or EOS is
added; added tokens such as <|im_start|> in the text become their single ids. A bad line stops
the command with its line number.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return errors.New("pass --tokenizer PATH (a tokenizer.json or a checkpoint directory)")
			}
			if st, err := os.Stat(path); err == nil && st.IsDir() {
				path = filepath.Join(path, "tokenizer.json")
			}
			tok, err := tokenizer.Load(path)
			if err != nil {
				return err
			}
			in := bufio.NewScanner(cmd.InOrStdin())
			in.Buffer(nil, 64<<20)
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			enc := json.NewEncoder(out)
			enc.SetEscapeHTML(false)
			for n := 1; in.Scan(); n++ {
				if len(in.Bytes()) == 0 {
					continue
				}
				if decode {
					var line struct {
						IDs *[]int `json:"ids"`
					}
					if err := json.Unmarshal(in.Bytes(), &line); err != nil || line.IDs == nil {
						return fmt.Errorf("line %d: want {\"ids\": [...]}", n)
					}
					text, err := tok.Decode(*line.IDs, skipSpecial)
					if err != nil {
						return fmt.Errorf("line %d: %w", n, err)
					}
					if err := enc.Encode(map[string]string{"text": text}); err != nil {
						return err
					}
					continue
				}
				var line struct {
					Text *string `json:"text"`
				}
				if err := json.Unmarshal(in.Bytes(), &line); err != nil || line.Text == nil {
					return fmt.Errorf("line %d: want {\"text\": \"...\"}", n)
				}
				ids := tok.Encode(*line.Text)
				if ids == nil {
					ids = []int{}
				}
				if err := enc.Encode(map[string][]int{"ids": ids}); err != nil {
					return err
				}
			}
			return in.Err()
		},
	}
	cmd.Flags().StringVar(&path, "tokenizer", "", "tokenizer.json, or a checkpoint directory")
	cmd.Flags().BoolVar(&decode, "decode", false, "decode {\"ids\"} lines instead")
	cmd.Flags().BoolVar(&skipSpecial, "skip-special-tokens", false, "with --decode, drop special tokens")
	return cmd
}
