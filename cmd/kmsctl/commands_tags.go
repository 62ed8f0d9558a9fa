package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

func init() {
	commands["create-tag"] = command{"create-tag KEY TAG_KEY=VALUE", runCreateTag}
	commands["delete-tag"] = command{"delete-tag KEY TAG_KEY", runDeleteTag}
	commands["batch-tags"] = command{"batch-tags KEY create|delete TAG_KEY[=VALUE]...",
		runBatchTags}
	commands["list-tags"] = command{"list-tags KEY", runListTags}
	commands["project-tags"] = command{"project-tags", runProjectTags}
	commands["find-keys"] = command{"find-keys [--tag KEY[=V1,V2]]... [--name TEXT] " +
		"[--limit N] [--offset N] [--count]", runFindKeys}
}

// parseTag splits TAG_KEY=VALUE; without "=" the value is empty.
func parseTag(arg string) map[string]string {
	key, value, _ := strings.Cut(arg, "=")
	return map[string]string{"key": key, "value": value}
}

func runCreateTag(env *cliEnv, args []string) error {
	pos, err := parse(flag.NewFlagSet("create-tag", flag.ContinueOnError), args, 2)
	if err != nil {
		return err
	}
	body := map[string]any{"tag": parseTag(pos[1])}
	return env.call(http.MethodPost, "kms/"+url.PathEscape(pos[0])+"/tags", body, nil)
}

func runDeleteTag(env *cliEnv, args []string) error {
	pos, err := parse(flag.NewFlagSet("delete-tag", flag.ContinueOnError), args, 2)
	if err != nil {
		return err
	}
	// The tag key is one path segment, so "/", ":" and non-ASCII characters are
	// percent-encoded.
	path := "kms/" + url.PathEscape(pos[0]) + "/tags/" + url.PathEscape(pos[1])
	return env.call(http.MethodDelete, path, nil, nil)
}

func runBatchTags(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("batch-tags", flag.ContinueOnError)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 3 {
		return usageError{"expected a key, create or delete, and at least one tag"}
	}

	tags := make([]map[string]string, 0, fs.NArg()-2)
	for _, arg := range fs.Args()[2:] {
		tags = append(tags, parseTag(arg))
	}
	body := map[string]any{"action": fs.Arg(1), "tags": tags}
	return env.call(http.MethodPost, "kms/"+url.PathEscape(fs.Arg(0))+"/tags/action",
		body, nil)
}

func runListTags(env *cliEnv, args []string) error {
	pos, err := parse(flag.NewFlagSet("list-tags", flag.ContinueOnError), args, 1)
	if err != nil {
		return err
	}
	return callPrintingJSON(env, http.MethodGet, "kms/"+url.PathEscape(pos[0])+"/tags", nil)
}

func runProjectTags(env *cliEnv, args []string) error {
	if _, err := parse(flag.NewFlagSet("project-tags", flag.ContinueOnError), args, 0); err != nil {
		return err
	}
	return callPrintingJSON(env, http.MethodGet, "kms/tags", nil)
}

// tagFilterFlag collects repeated --tag KEY[=V1,V2] flags of find-keys.
type tagFilterFlag []map[string]any

func (f *tagFilterFlag) String() string { return fmt.Sprint([]map[string]any(*f)) }

func (f *tagFilterFlag) Set(v string) error {
	key, values, ok := strings.Cut(v, "=")
	if key == "" {
		return fmt.Errorf("--tag takes KEY or KEY=V1,V2, got %q", v)
	}
	list := []string{}
	if ok {
		list = strings.Split(values, ",")
	}
	*f = append(*f, map[string]any{"key": key, "values": list})
	return nil
}

func runFindKeys(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("find-keys", flag.ContinueOnError)
	var tags tagFilterFlag
	fs.Var(&tags, "tag", "tag KEY with any value, or KEY=V1,V2 with one of them (repeatable)")
	name := fs.String("name", "", "keep keys whose key_alias contains TEXT, ignoring case")
	limit := fs.String("limit", "", "keys per page (1 to 1000, default 10)")
	offset := fs.String("offset", "", "offset of the page")
	count := fs.Bool("count", false, "print only the number of matching keys")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}

	body := map[string]any{"action": "filter", "tags": []map[string]any(tags)}
	if *count {
		body["action"] = "count"
	}
	if tags == nil {
		body["tags"] = []map[string]any{}
	}
	if *name != "" {
		body["matches"] = []map[string]string{{"key": "resource_name", "value": *name}}
	}
	if *limit != "" {
		body["limit"] = *limit
	}
	if *offset != "" {
		body["offset"] = *offset
	}
	return callPrintingJSON(env, http.MethodPost, "kms/resource_instances/action", body)
}
