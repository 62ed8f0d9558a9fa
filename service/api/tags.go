package api

import (
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// tagRoutes registers the tag operations. Echo matches static segments before
// parameters, so .../kms/tags and .../kms/resource_instances/action never reach the
// :key_id routes.
func (s *Server) tagRoutes(g *routeGroup) {
	g.POST("/:key_id/tags", s.op(auth.OpCreateTag, s.createTag))
	g.DELETE("/:key_id/tags/:tag_key", s.op(auth.OpDeleteTag, s.deleteTag))
	g.POST("/:key_id/tags/action", s.op(auth.OpBatchTags, s.batchTags))
	g.GET("/:key_id/tags", s.op(auth.OpListKeyTags, s.listKeyTags))
	g.GET("/tags", s.op(auth.OpListProjectTags, s.listProjectTags))
	g.POST("/resource_instances/action", s.op(auth.OpListResourceInstances,
		s.listResourceInstances))
}

// tag is the {key, value} object of the tag operations.
type tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func tagsOf(tags []store.Tag) []tag {
	out := make([]tag, len(tags))
	for i, t := range tags {
		out[i] = tag{Key: t.Key, Value: t.Value}
	}
	return out
}

func storeTags(tags []tag) []store.Tag {
	out := make([]store.Tag, len(tags))
	for i, t := range tags {
		out[i] = store.Tag{Key: t.Key, Value: t.Value}
	}
	return out
}

type createTagRequest struct {
	Tag      *tag   `json:"tag"`
	Sequence string `json:"sequence"`
}

func (s *Server) createTag(c echo.Context, st *requestState) (any, error) {
	var req createTagRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = c.Param("key_id")

	if req.Tag == nil {
		return nil, service.Errorf(service.CodeMissingParameter, "tag is missing")
	}
	t := store.Tag{Key: req.Tag.Key, Value: req.Tag.Value}
	if err := s.svc.CreateTag(c.Request().Context(), st.principal, st.keyID, t); err != nil {
		return nil, err
	}
	return noContent{}, nil
}

// sequenceRequest is the body of operations whose only field is sequence.
type sequenceRequest struct {
	Sequence string `json:"sequence"`
}

func (s *Server) deleteTag(c echo.Context, st *requestState) (any, error) {
	var req sequenceRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = c.Param("key_id")

	tagKey, err := lastPathSegment(c)
	if err != nil {
		return nil, err
	}
	if err := s.svc.DeleteTag(c.Request().Context(), st.principal, st.keyID, tagKey); err != nil {
		return nil, err
	}
	return noContent{}, nil
}

// lastPathSegment returns the percent-decoded last segment of the request path. It is
// read from the escaped path, not from the router's parameter, so that a tag key with
// an encoded "/" or "%" is decoded exactly once.
func lastPathSegment(c echo.Context) (string, error) {
	escaped := c.Request().URL.EscapedPath()
	segment := escaped[strings.LastIndexByte(escaped, '/')+1:]
	decoded, err := url.PathUnescape(segment)
	if err != nil {
		return "", service.Errorf(service.CodeInvalidURL, "the tag key in the URL is not "+
			"validly percent-encoded")
	}
	return decoded, nil
}

type batchTagsRequest struct {
	Tags     []tag  `json:"tags"`
	Action   string `json:"action"`
	Sequence string `json:"sequence"`
}

func (s *Server) batchTags(c echo.Context, st *requestState) (any, error) {
	var req batchTagsRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = c.Param("key_id")

	err := s.svc.BatchTags(c.Request().Context(), st.principal, st.keyID, req.Action,
		storeTags(req.Tags))
	if err != nil {
		return nil, err
	}
	return noContent{}, nil
}

type keyTagsResponse struct {
	Tags         []tag `json:"tags"`
	ExistTagsNum int   `json:"existTagsNum"`
}

func (s *Server) listKeyTags(c echo.Context, st *requestState) (any, error) {
	st.keyID = c.Param("key_id")

	tags, err := s.svc.ListKeyTags(c.Request().Context(), st.principal, st.keyID)
	if err != nil {
		return nil, err
	}
	return keyTagsResponse{Tags: tagsOf(tags), ExistTagsNum: len(tags)}, nil
}

// tagValues is the {key, values[]} object of project tags and resource_instances.
type tagValues struct {
	Key    string   `json:"key"`
	Values []string `json:"values"`
}

type projectTagsResponse struct {
	Tags []tagValues `json:"tags"`
}

func (s *Server) listProjectTags(c echo.Context, st *requestState) (any, error) {
	tags, err := s.svc.ListProjectTags(c.Request().Context(), st.principal)
	if err != nil {
		return nil, err
	}

	out := projectTagsResponse{Tags: make([]tagValues, len(tags))}
	for i, t := range tags {
		out.Tags[i] = tagValues{Key: t.Key, Values: t.Values}
	}
	return out, nil
}

type resourceInstancesRequest struct {
	Limit    flexString  `json:"limit"`
	Offset   flexString  `json:"offset"`
	Action   string      `json:"action"`
	Tags     []tagValues `json:"tags"`
	Matches  []tag       `json:"matches"`
	Sequence string      `json:"sequence"`
}

type resource struct {
	ResourceID     string     `json:"resource_id"`
	ResourceDetail keyDetails `json:"resource_detail"`
	ResourceName   string     `json:"resource_name"`
	Tags           []tag      `json:"tags"`
}

type resourceInstancesResponse struct {
	Resources  []resource `json:"resources"`
	TotalCount int        `json:"total_count"`
}

type resourceCountResponse struct {
	TotalCount int `json:"total_count"`
}

func (s *Server) listResourceInstances(c echo.Context, st *requestState) (any, error) {
	var req resourceInstancesRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}

	in, err := resourceInstancesInput(req)
	if err != nil {
		return nil, err
	}
	res, err := s.svc.FindKeysByTags(c.Request().Context(), st.principal, in)
	if err != nil {
		return nil, err
	}

	if in.Action == service.TagQueryCount {
		return resourceCountResponse{TotalCount: res.Total}, nil
	}
	out := resourceInstancesResponse{Resources: make([]resource, len(res.Keys)),
		TotalCount: res.Total}
	for i, found := range res.Keys {
		out.Resources[i] = resource{
			ResourceID:     found.Key.ID,
			ResourceDetail: s.details(found.Key),
			ResourceName:   found.Key.Alias,
			Tags:           tagsOf(found.Tags),
		}
	}
	return out, nil
}

func resourceInstancesInput(req resourceInstancesRequest) (service.ResourceInstancesInput, error) {
	limit, limitSet, err := req.Limit.int("limit", service.CodeInvalidTagLimit)
	if err != nil {
		return service.ResourceInstancesInput{}, err
	}
	if limitSet && limit == 0 && req.Action == service.TagQueryFilter {
		// An absent limit selects the default, but an explicit 0 is out of range.
		return service.ResourceInstancesInput{}, service.Errorf(service.CodeInvalidTagLimit,
			"limit must be 1 to %d", service.MaxTagQueryLimit)
	}
	offset, _, err := req.Offset.int("offset", service.CodeInvalidTagOffset)
	if err != nil {
		return service.ResourceInstancesInput{}, err
	}

	in := service.ResourceInstancesInput{Action: req.Action, Limit: limit, Offset: offset,
		Tags: make([]store.TagValues, len(req.Tags))}
	for i, t := range req.Tags {
		in.Tags[i] = store.TagValues{Key: t.Key, Values: t.Values}
	}
	for _, m := range req.Matches {
		in.Matches = append(in.Matches, service.TagMatch{Key: m.Key, Value: m.Value})
	}
	return in, nil
}
