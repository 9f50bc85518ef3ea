"""Recommender servicer: convert, call the pipeline, convert back."""
from __future__ import annotations

from collections.abc import Iterator

from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

from recsys.errors import InvalidRequest
from recsys.pipeline import Pipeline
from service.convert import request_from_proto, response_to_proto


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def Rank(self, request: pb.RankRequest, context) -> pb.RankResponse:
        return response_to_proto(self.pipeline.rank(request_from_proto(request)))

    def RankStream(self, request_iterator: Iterator[pb.RankRequest], context) -> Iterator[pb.RankResponse]:
        for i, request in enumerate(request_iterator):
            try:
                resp = self.pipeline.rank(request_from_proto(request))
            except InvalidRequest as exc:
                raise InvalidRequest(f"requests[{i}].{exc.field}", exc.description) from None
            yield response_to_proto(resp)
