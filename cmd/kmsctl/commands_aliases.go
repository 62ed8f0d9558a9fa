package main

import (
	"flag"
	"net/http"
	"net/url"
)

func init() {
	commands["update-key-alias"] = command{"update-key-alias KEY KEY_ALIAS", runUpdateKeyAlias}
	commands["update-key-description"] = command{"update-key-description KEY TEXT",
		runUpdateKeyDescription}
	commands["create-alias"] = command{"create-alias KEY alias/NAME", runCreateAlias}
	commands["delete-alias"] = command{"delete-alias KEY alias/NAME...", runDeleteAliases}
	commands["list-aliases"] = command{"list-aliases [--key KEY] [--limit N] [--marker N]",
		runListAliases}
	commands["associate-alias"] = command{"associate-alias alias/NAME KEY", runAssociateAlias}
}

func runUpdateKeyAlias(env *cliEnv, args []string) error {
	pos, err := parse(flag.NewFlagSet("update-key-alias", flag.ContinueOnError), args, 2)
	if err != nil {
		return err
	}
	body := map[string]any{"key_id": pos[0], "key_alias": pos[1]}
	return callPrintingJSON(env, http.MethodPost, "kms/update-key-alias", body)
}

func runUpdateKeyDescription(env *cliEnv, args []string) error {
	pos, err := parse(flag.NewFlagSet("update-key-description", flag.ContinueOnError), args, 2)
	if err != nil {
		return err
	}
	body := map[string]any{"key_id": pos[0], "key_description": pos[1]}
	return callPrintingJSON(env, http.MethodPost, "kms/update-key-description", body)
}

func runCreateAlias(env *cliEnv, args []string) error {
	pos, err := parse(flag.NewFlagSet("create-alias", flag.ContinueOnError), args, 2)
	if err != nil {
		return err
	}
	body := map[string]any{"key_id": pos[0], "alias": pos[1]}
	return callPrintingJSON(env, http.MethodPost, "kms/aliases", body)
}

// runDeleteAliases deletes one or more aliases of a key in one request, all or none.
func runDeleteAliases(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("delete-alias", flag.ContinueOnError)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return usageError{"expected a key and at least one alias"}
	}
	body := map[string]any{"key_id": fs.Arg(0), "aliases": fs.Args()[1:]}
	return env.call(http.MethodDelete, "kms/aliases", body, nil)
}

func runListAliases(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("list-aliases", flag.ContinueOnError)
	key := fs.String("key", "", "list only the aliases of this key id")
	limit := fs.String("limit", "", "aliases per page (1 to 1000)")
	marker := fs.String("marker", "", "offset of the page")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}

	query := url.Values{}
	for name, v := range map[string]string{"key_id": *key, "limit": *limit, "marker": *marker} {
		if v != "" {
			query.Set(name, v)
		}
	}
	path := "kms/aliases"
	if len(query) > 0 {
		path += "?" + query.Encode()
	}

	var out []map[string]any
	if err := env.call(http.MethodGet, path, nil, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}

func runAssociateAlias(env *cliEnv, args []string) error {
	pos, err := parse(flag.NewFlagSet("associate-alias", flag.ContinueOnError), args, 2)
	if err != nil {
		return err
	}
	body := map[string]any{"alias": pos[0], "target_key_id": pos[1]}
	return callPrintingJSON(env, http.MethodPost, "kms/alias/associate", body)
}

// callPrintingJSON sends a request and prints the JSON response.
func callPrintingJSON(env *cliEnv, method, path string, body any) error {
	var out map[string]any
	if err := env.call(method, path, body, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}
