import pytest
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from tests.helpers.servers import ChatServer


@pytest.fixture(scope="session")
def chat_server(chatglm_chat, tmp_path_factory):
    server = ChatServer(
        chatglm_chat[0],
        tmp_path_factory.mktemp("serve") / "server.log",
        "--max-tokens",
        "64",
        "--max-body-bytes",
        "20000",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chatglm(chatglm_chat):
    """The served folder's model and tokenizer, loaded in this process: what `chat_reference` answers with."""
    folder = chatglm_chat[0]
    return AutoModelForSeq2SeqLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
