package dockerfile

import "testing"

func TestUndeclaredVar(t *testing.T) {
	declared := map[string]bool{"A": true}
	for word, want := range map[string]string{
		"alpine":         "",
		"$A":             "",
		"${A}":           "",
		"$B":             "B",
		"x${B}y":         "B",
		"${B:-x}":        "",
		"${B-x}":         "",
		"${B:+x}":        "",
		"${B:?x}":        "",
		`\$B`:            "",
		"'$B'":           "",
		`"$B"`:           "B",
		"$A$B_C":         "B_C",
		"$":              "",
		"${unterminated": "",
	} {
		got, _ := undeclaredVar(word, '\\', declared)
		if got != want {
			t.Errorf("undeclaredVar(%q) = %q, want %q", word, got, want)
		}
	}
}
