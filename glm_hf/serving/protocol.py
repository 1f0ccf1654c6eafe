"""Request bodies of `glm-hf serve`: the OpenAI chat-completions and completions fields it honours, and the
blank-filling extension. Unknown fields are ignored, as OpenAI-compatible servers commonly do; out-of-range values
are refused with a 400 that names the field."""

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP_STRINGS = 4
MAX_CHOICES = 8


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text; only text content parts are understood."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        unsupported = [part.type for part in self.content if part.type != "text"]
        if unsupported:
            raise ValueError(f"Only text content is supported; got content parts of type {unsupported}.")
        return "".join(part.text or "" for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields shared by every generating endpoint."""

    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _none_is_default(cls, value, info):
        if value is None:
            return cls.model_fields[info.field_name].default
        return value


class GeneratingFields(SamplingFields):
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS or any(not stop for stop in stops):
            raise ValueError(f"stop takes up to {MAX_STOP_STRINGS} non-empty strings.")
        return stops


class ChatCompletionRequest(GeneratingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(GeneratingFields):
    prompt: str | list[str]


class FillRequest(SamplingFields):
    """`POST /v1/fill`: every blank (`[MASK]`, `[sMASK]`, `[gMASK]`) of `text` filled left to right; `max_tokens`
    is per blank. `text` is GLM markup (the fill-blank pipeline's default): its blank strings are the blanks."""

    text: str


__all__ = ["ChatCompletionRequest", "ChatMessage", "CompletionRequest", "FillRequest"]
