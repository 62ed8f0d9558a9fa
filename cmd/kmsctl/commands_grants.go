package main

import (
	"flag"
	"net/http"
	"strings"
)

func init() {
	commands["create-grant"] = command{
		"create-grant KEY --grantee ID --operations OP[,OP...] [--type user|domain] " +
			"[--name NAME] [--retiring USER_ID]", runCreateGrant}
	commands["list-grants"] = command{"list-grants KEY [--limit N] [--marker N]", runListGrants}
	commands["revoke-grant"] = command{"revoke-grant KEY GRANT_ID", runDeleteGrant("revoke-grant")}
	commands["retire-grant"] = command{"retire-grant KEY GRANT_ID", runDeleteGrant("retire-grant")}
	commands["list-retirable-grants"] = command{"list-retirable-grants [--limit N] [--marker N]",
		runListRetirableGrants}
}

func runCreateGrant(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("create-grant", flag.ContinueOnError)
	grantee := fs.String("grantee", "", "user id, or domain id with --type domain (required)")
	granteeType := fs.String("type", "", "grantee principal type: user (default) or domain")
	operations := fs.String("operations", "", "comma-separated operations to grant (required)")
	name := fs.String("name", "", "grant name")
	retiring := fs.String("retiring", "", "user id that may retire the grant")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *grantee == "" || *operations == "" {
		return usageError{"--grantee and --operations are required"}
	}

	body := map[string]any{
		"key_id":            pos[0],
		"grantee_principal": *grantee,
		"operations":        strings.Split(*operations, ","),
	}
	for field, value := range map[string]string{
		"grantee_principal_type": *granteeType, "name": *name, "retiring_principal": *retiring,
	} {
		if value != "" {
			body[field] = value
		}
	}

	var out map[string]any
	if err := env.call(http.MethodPost, "kms/create-grant", body, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}

func runListGrants(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("list-grants", flag.ContinueOnError)
	limit, marker := pageFlags(fs)
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}

	body := pageBody(*limit, *marker)
	body["key_id"] = pos[0]
	var out map[string]any
	if err := env.call(http.MethodPost, "kms/list-grants", body, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}

func runListRetirableGrants(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("list-retirable-grants", flag.ContinueOnError)
	limit, marker := pageFlags(fs)
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}

	var out map[string]any
	body := pageBody(*limit, *marker)
	if err := env.call(http.MethodPost, "kms/list-retirable-grants", body, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}

// runDeleteGrant returns the command for revoke-grant or retire-grant, which take the
// same arguments.
func runDeleteGrant(op string) func(env *cliEnv, args []string) error {
	return func(env *cliEnv, args []string) error {
		pos, err := parse(flag.NewFlagSet(op, flag.ContinueOnError), args, 2)
		if err != nil {
			return err
		}

		body := map[string]any{"key_id": pos[0], "grant_id": pos[1]}
		var out map[string]any
		if err := env.call(http.MethodPost, "kms/"+op, body, &out); err != nil {
			return err
		}
		return printJSON(env.stdout, out)
	}
}

func pageFlags(fs *flag.FlagSet) (limit, marker *string) {
	limit = fs.String("limit", "", "grants per page (1 to 1000; default 10)")
	marker = fs.String("marker", "", "offset of the page, from next_marker")
	return limit, marker
}

func pageBody(limit, marker string) map[string]any {
	body := map[string]any{}
	if limit != "" {
		body["limit"] = limit
	}
	if marker != "" {
		body["marker"] = marker
	}
	return body
}
