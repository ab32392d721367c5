"""REST API (Django REST framework). Authentication: session (with CSRF on unsafe methods) or
``Authorization: Token <key>``; anonymous requests get 401 or 403 with ``{"detail": str}``."""

from django.http import Http404
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors
from .serializers import MessageSerializer

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 200


class HistoryQuery(serializers.Serializer):
    """Query of the history route: at most one of ``after_seq`` / ``before_seq`` (seq numbers,
    ≥ 0), and ``limit`` (1..200, default 50)."""

    after_seq = serializers.IntegerField(required=False, min_value=0)
    before_seq = serializers.IntegerField(required=False, min_value=1)
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=HISTORY_MAX_LIMIT, default=HISTORY_DEFAULT_LIMIT
    )

    def validate(self, attrs):
        if "after_seq" in attrs and "before_seq" in attrs:
            raise serializers.ValidationError("Give after_seq or before_seq, not both.")
        return attrs


class RoomMessagesView(APIView):
    """``GET /api/rooms/<slug>/messages/``: a room's history, paged by ``seq`` (never by time).

    - no parameter: the newest ``limit`` messages;
    - ``?after_seq=N``: the first ``limit`` messages with ``seq > N`` (catching up after a gap);
    - ``?before_seq=N``: the ``limit`` messages just before ``seq N`` (scrolling back).

    200 ``{"results": [message, ...] (oldest first, MessageSerializer shape), "has_more": bool}``;
    ``has_more`` says whether more messages lie beyond the page in the direction of travel (after
    the last for ``after_seq``, before the first otherwise). 400 with field errors for a bad
    query; 404 ``{"detail": ...}`` for an unknown room.
    """

    def get(self, request, slug: str):
        room = selectors.room_get(slug=slug)
        if room is None:
            raise Http404("No such room.")
        query = HistoryQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        if "after_seq" in query.validated_data:
            page = selectors.room_messages_after(
                room=room, after_seq=query.validated_data["after_seq"], limit=limit + 1
            )
            has_more = len(page) > limit
            page = page[:limit]
        else:
            page = selectors.room_history(
                room=room, before_seq=query.validated_data.get("before_seq"), limit=limit + 1
            )
            has_more = len(page) > limit
            page = page[-limit:] if page else page
        return Response({"results": MessageSerializer(page, many=True).data, "has_more": has_more})
