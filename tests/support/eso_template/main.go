// eso-template renders one External Secrets Operator template value the way the operator's template engine v2
// does (docs/guides/templating.md of external-secrets v1.3.2): Go text/template with missingkey=error, the Sprig
// v3 text functions without env and expandenv, and the ExternalSecret's data as a map of strings. Only the
// functions a template here uses are relied on; the operator's own extra functions (pkcs12, jwk, ...) are absent.
//
//	eso-template TEMPLATE_FILE < DATA_JSON   (DATA_JSON: {"secretKey": "value", ...}; the result on stdout)
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/template"

	"github.com/Masterminds/sprig/v3"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: eso-template TEMPLATE_FILE < DATA_JSON")
		os.Exit(64)
	}
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	data := map[string]string{}
	if err := json.NewDecoder(os.Stdin).Decode(&data); err != nil {
		fmt.Fprintln(os.Stderr, "data:", err)
		os.Exit(1)
	}
	functions := sprig.TxtFuncMap()
	delete(functions, "env")
	delete(functions, "expandenv")
	parsed, err := template.New("value").Option("missingkey=error").Funcs(functions).Parse(string(text))
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(1)
	}
	if err := parsed.Execute(os.Stdout, data); err != nil {
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(1)
	}
}
