"""SideStream: input-independent work of a layer on a second CUDA stream."""
import pytest
import torch

from mmdyn.layers.side_stream import SideStream

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='needs CUDA')


def test_runs_inline_on_the_cpu():
    a = torch.randn(3)
    side = SideStream(a.device)
    with side:
        b = a * 2
    assert not side.active
    (joined, ) = side.join([b])
    assert joined is b and torch.equal(joined, a * 2)


@needs_cuda
def test_block_runs_on_another_stream_and_join_waits_for_it():
    device = torch.device('cuda')
    main = torch.cuda.current_stream(device)
    a = torch.randn(2048, 2048, device=device)
    side = SideStream(device)
    with side:
        assert torch.cuda.current_stream(device) != main
        b = a @ a
    assert torch.cuda.current_stream(device) == main
    (b, ) = side.join([b])
    torch.testing.assert_close(b + 1, a @ a + 1)


@needs_cuda
def test_inside_a_captured_graph():
    device = torch.device('cuda')
    a = torch.randn(64, 64, device=device)

    def compute():
        side = SideStream(device)
        with side:
            b = a @ a
        c = a.sin()
        (b, ) = side.join([b])
        return b + c

    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        compute()  # warm up
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = compute()
    a.copy_(torch.randn(64, 64, device=device))
    graph.replay()
    torch.testing.assert_close(out, a @ a + a.sin())
