"""Content parts of chat messages, mirroring the spec's `ChatCompletionContentPart*` schemas.

Every message role accepts the full set of part types here, which is the spec's custom-role union. The
spec narrows it per role (system text only, user text/image/audio/file, ...), but vLLM falls back to its
custom-role schema whenever a standard role's narrower schema fails, so in practice any role may carry any
part. Parsing them all lets the translation step answer "model does not accept video_url input" instead
of a schema error, and lets a later multimodal model reuse these models unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Discriminator, Tag

from jaxserve.http.protocol.base import ExtensibleModel


class ChatCompletionContentPartTextParam(ExtensibleModel):
    text: str
    type: Literal["text"]


class ImageURL(ExtensibleModel):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ChatCompletionContentPartImageParam(ExtensibleModel):
    input_name: ClassVar[str] = "image_url"
    image_url: ImageURL
    type: Literal["image_url"]


class InputAudio(ExtensibleModel):
    data: str
    format: Literal["wav", "mp3"]


class ChatCompletionContentPartInputAudioParam(ExtensibleModel):
    input_name: ClassVar[str] = "input_audio"
    input_audio: InputAudio
    type: Literal["input_audio"]


class FileFile(ExtensibleModel):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class File(ExtensibleModel):
    """The spec's `File` content part (a file given inline or by id)."""

    input_name: ClassVar[str] = "file"
    file: FileFile
    type: Literal["file"]


class AudioURL(ExtensibleModel):
    url: str


class ChatCompletionContentPartAudioParam(ExtensibleModel):
    input_name: ClassVar[str] = "audio_url"
    audio_url: AudioURL
    type: Literal["audio_url"]


class VideoURL(ExtensibleModel):
    url: str


class ChatCompletionContentPartVideoParam(ExtensibleModel):
    input_name: ClassVar[str] = "video_url"
    video_url: VideoURL
    type: Literal["video_url"]


class ChatCompletionContentPartRefusalParam(ExtensibleModel):
    refusal: str
    type: Literal["refusal"]


class CustomChatCompletionContentSimpleImageParam(ExtensibleModel):
    """`{"image_url": "https://..."}` without a `type` (accepted by OpenAI, undocumented)."""

    input_name: ClassVar[str] = "image_url"
    image_url: str | None = None
    uuid: str | None = None


class ChatCompletionContentPartImageEmbedsParam(ExtensibleModel):
    input_name: ClassVar[str] = "image_embeds"
    image_embeds: str | dict[str, str] | None = None
    type: Literal["image_embeds"]
    uuid: str | None = None


class ChatCompletionContentPartAudioEmbedsParam(ExtensibleModel):
    input_name: ClassVar[str] = "audio_embeds"
    audio_embeds: str | dict[str, str] | None = None
    type: Literal["audio_embeds"]
    uuid: str | None = None


class CustomChatCompletionContentSimpleAudioParam(ExtensibleModel):
    """`{"audio_url": "https://..."}` without a `type`."""

    input_name: ClassVar[str] = "audio_url"
    audio_url: str | None = None


class CustomChatCompletionContentSimpleVideoParam(ExtensibleModel):
    """`{"video_url": "https://..."}` without a `type`."""

    input_name: ClassVar[str] = "video_url"
    video_url: str | None = None
    uuid: str | None = None


class CustomThinkCompletionContentParam(ExtensibleModel):
    thinking: str
    closed: bool | None = None
    type: Literal["thinking"]


class UnknownContentPart(ExtensibleModel):
    """Not in the spec: a part whose `type` names none of the above.

    Parsed rather than rejected by the schema so the error can say which type is unsupported, in words,
    from the translation step.
    """

    type: str


_TAGGED_PARTS: dict[str, type[BaseModel]] = {
    "text": ChatCompletionContentPartTextParam,
    "image_url": ChatCompletionContentPartImageParam,
    "input_audio": ChatCompletionContentPartInputAudioParam,
    "file": File,
    "audio_url": ChatCompletionContentPartAudioParam,
    "video_url": ChatCompletionContentPartVideoParam,
    "refusal": ChatCompletionContentPartRefusalParam,
    "image_embeds": ChatCompletionContentPartImageEmbedsParam,
    "audio_embeds": ChatCompletionContentPartAudioEmbedsParam,
    "thinking": CustomThinkCompletionContentParam,
}
"""Parts that carry a `type`, by that type."""

_UNTYPED_PARTS: dict[str, type[BaseModel]] = {
    "image_url": CustomChatCompletionContentSimpleImageParam,
    "audio_url": CustomChatCompletionContentSimpleAudioParam,
    "video_url": CustomChatCompletionContentSimpleVideoParam,
}
"""Shorthand parts without a `type`, by the key that identifies them (checked in this order, as vLLM)."""

_TAG_OF_CLASS: dict[type, str] = {
    **{cls: f"part:{key}" for key, cls in _TAGGED_PARTS.items()},
    **{cls: f"part:simple_{key}" for key, cls in _UNTYPED_PARTS.items()},
    UnknownContentPart: "part:unknown",
}


def _content_part_tag(value: Any) -> str | None:
    """Choose the part model from `type` (or the shorthand key), so errors come from one schema only.

    Tags contain a colon so the error mapper can drop them from the failing field's path.
    """
    if isinstance(value, str):
        return "part:str"
    if isinstance(value, BaseModel):
        return _TAG_OF_CLASS.get(type(value))
    if not isinstance(value, dict):
        return None
    part_type = value.get("type")
    if isinstance(part_type, str):
        return f"part:{part_type}" if part_type in _TAGGED_PARTS else "part:unknown"
    if part_type is None:
        for key in _UNTYPED_PARTS:
            if key in value:
                return f"part:simple_{key}"
    return None


ChatCompletionContentPartParam = Annotated[
    Annotated[str, Tag("part:str")]
    | Annotated[ChatCompletionContentPartTextParam, Tag("part:text")]
    | Annotated[ChatCompletionContentPartImageParam, Tag("part:image_url")]
    | Annotated[ChatCompletionContentPartInputAudioParam, Tag("part:input_audio")]
    | Annotated[File, Tag("part:file")]
    | Annotated[ChatCompletionContentPartAudioParam, Tag("part:audio_url")]
    | Annotated[ChatCompletionContentPartVideoParam, Tag("part:video_url")]
    | Annotated[ChatCompletionContentPartRefusalParam, Tag("part:refusal")]
    | Annotated[CustomChatCompletionContentSimpleImageParam, Tag("part:simple_image_url")]
    | Annotated[ChatCompletionContentPartImageEmbedsParam, Tag("part:image_embeds")]
    | Annotated[ChatCompletionContentPartAudioEmbedsParam, Tag("part:audio_embeds")]
    | Annotated[CustomChatCompletionContentSimpleAudioParam, Tag("part:simple_audio_url")]
    | Annotated[CustomChatCompletionContentSimpleVideoParam, Tag("part:simple_video_url")]
    | Annotated[CustomThinkCompletionContentParam, Tag("part:thinking")]
    | Annotated[UnknownContentPart, Tag("part:unknown")],
    Discriminator(
        _content_part_tag,
        custom_error_type="invalid_content_part",
        custom_error_message="a content part must be a string or an object with a 'type'",
    ),
]
"""One element of a message's `content` list."""

NonTextContentPart = (
    ChatCompletionContentPartImageParam
    | ChatCompletionContentPartInputAudioParam
    | File
    | ChatCompletionContentPartAudioParam
    | ChatCompletionContentPartVideoParam
    | CustomChatCompletionContentSimpleImageParam
    | ChatCompletionContentPartImageEmbedsParam
    | ChatCompletionContentPartAudioEmbedsParam
    | CustomChatCompletionContentSimpleAudioParam
    | CustomChatCompletionContentSimpleVideoParam
)
"""Parts that carry media rather than text; each names its kind in `input_name`."""


def _content_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "content:str"
    if isinstance(value, list):
        return "content:parts"
    return None


MessageContent = Annotated[
    Annotated[str, Tag("content:str")]
    | Annotated[list[ChatCompletionContentPartParam], Tag("content:parts")],
    Discriminator(
        _content_tag,
        custom_error_type="invalid_content",
        custom_error_message="content must be a string or a list of content parts",
    ),
]
"""A message's `content`: a string, or a list of parts (one schema tried, so one precise error)."""
